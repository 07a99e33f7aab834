"""Ollama models: what the server has and has loaded, each model's Modelfile, and actions — test a
prompt (streaming, tokens/s), copy/tag, delete, roll back ``latest``. A server that is down is a state
shown in the pane and retried in the background, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from w4tui.ui.sources import fmt
from w4tui.ui.widgets.pane import Pane
from w4tui.ui.widgets.status import resolve

POLL_S = 5.0  # while the pane is on screen
POLL_HIDDEN_S = 60.0  # otherwise: the list is only for the "latest" marker and quick switching
KEYS = ("name", "alias", "size", "quant", "modified", "run")
LABELS = ("name", "is", "size", "quant", "modified", "loaded")
ALIASES = ("latest", "previous")  # tags that point at a build: moved by promote and rollback


@dataclass(frozen=True)
class OllamaSnapshot:
    host: str
    models: tuple[dict, ...] = ()
    running: tuple[dict, ...] = ()
    error: str | None = None
    hint: str | None = None
    checked: float = 0.0


def _when(value, now: float) -> str:
    if isinstance(value, datetime):
        return fmt.clock(value.timestamp(), now)
    if isinstance(value, str):
        try:
            return fmt.clock(datetime.fromisoformat(value).timestamp(), now)
        except ValueError:
            return value[:16]
    return "-"


def _alias_cell(aliases: list[str]) -> str:
    return aliases[0] + ("+" if len(aliases) > 1 else "") if aliases else ""  # (both: right after a rollback)


class OllamaPane(Pane):
    PANE_ID, TITLE, KEY = "ollama", "Ollama models", "4"
    SHORT = "Ollama"
    DEFAULT_CSS = """
    OllamaPane #ollama-state { height: auto; }
    OllamaPane DataTable { height: 1fr; }
    OllamaPane #ollama-detail { height: auto; max-height: 3; color: $text-muted; }
    """
    BINDINGS = [
        Binding("t", "test", "Test prompt", id="ollama.test", tooltip="Send a prompt; the answer streams in"),
        Binding("m", "modelfile", "Modelfile", id="ollama.modelfile", tooltip="Show the model's Modelfile"),
        Binding("c", "copy", "Copy/tag", id="ollama.copy", tooltip="Copy the model to another name or tag"),
        Binding("d,delete", "delete", "Delete", id="ollama.delete", tooltip="Delete the model (asks first)"),
        Binding("b", "rollback", "Roll back", id="ollama.rollback", tooltip="Point latest back at previous"),
        Binding("r", "refresh", "Refresh", id="ollama.refresh", tooltip="Ask the server again now"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: OllamaSnapshot | None = None
        self._last_poll = 0.0
        self._fitted = 0  # the pane width the name column was fitted to
        self._fitted = 0  # the pane width the name column was fitted to

    def compose(self) -> ComposeResult:
        yield Static("asking Ollama…", id="ollama-state")
        table = DataTable(cursor_type="row", id="ollama-table")
        for key, label in zip(KEYS, LABELS):
            table.add_column(label, key=key, width=max(12, len(label)) if key == "name" else len(label))
        yield table
        yield Static(id="ollama-detail")

    def on_mount(self) -> None:
        # Not before the first frame: importing the client (httpx) in a thread would hold the GIL then.
        self.set_timer(
            0.5 if self.display else 1.5,
            lambda: self.run_loop("ollama", self._ask, lambda: POLL_S if self.display else POLL_HIDDEN_S, shared=False),
        )

    def on_show(self) -> None:
        if self.snapshot is None or self.app.clock() - self._last_poll > POLL_S:
            self.refresh_models()

    def refresh_models(self) -> None:
        """Ask the server now."""
        self.poke("ollama")

    def _ask(self) -> None:  # in the "ollama" loop's thread
        from w4tui import ollama_client as oc

        config = self.app.config
        self._last_poll = self.app.clock()
        try:
            models = tuple(oc.list_models(config))
            running = tuple(oc.running(config))
            snap = OllamaSnapshot(oc.host(config), models, running, None, self._last_poll)
        except oc.OllamaError as exc:
            snap = OllamaSnapshot(oc.host(config), error=exc.message, hint=exc.hint, checked=self._last_poll)
        self.deliver("snapshot", snap)

    def restyle(self) -> None:
        if self.ready and self.snapshot is not None:
            self.show_snapshot(self.snapshot, force=True)

    def show_snapshot(self, snap: OllamaSnapshot, force: bool = False) -> None:
        previous, self.snapshot = (None if force else self.snapshot), snap
        state = self.query_one("#ollama-state", Static)
        if snap.error:
            state.update(
                Text.assemble(
                    ("✗ " + snap.error, resolve("bold $error", self.app)),
                    f"\n{snap.hint}" if snap.hint else "",
                    (f"\nasking again every {POLL_S:.0f} s; r asks now", "dim"),
                )
            )
        else:
            loaded = ", ".join(f"{m['model']} ({fmt.size(m.get('size_vram') or m.get('size'))})" for m in snap.running)
            state.update(
                Text.assemble(
                    (f"{snap.host}", "bold"),
                    (f"  {len(snap.models)} models", "dim"),
                    ("  loaded: ", "dim"),
                    loaded or "none",
                )
            )
        if previous is not None and previous.models == snap.models and previous.running == snap.running:
            return
        self._fill(snap)

    def _fill(self, snap: OllamaSnapshot) -> None:
        table = self.query_one(DataTable)
        keep = self.selected
        now = self.app.clock()
        models = sorted(snap.models, key=lambda m: m["model"])
        running = {m["model"] for m in snap.running}
        accent, success = resolve("$accent", self.app), resolve("$success", self.app)
        rows = [
            (
                m["model"],
                _alias_cell(self.aliases_of(m["model"])),
                fmt.size(m.get("size")),
                (m.get("details") or {}).get("quantization_level") or "-",
                _when(m.get("modified_at"), now),
            )
            for m in models
        ]
        # Explicit widths (see the artifacts pane): each fixed column as wide as its widest cell, the
        # name gets the rest of the pane, cut with "…" so builds stay told apart; refitted on resize.
        widths = [max([len(label), *(len(row[i]) for row in rows)]) for i, label in enumerate(LABELS[1:5], 1)]
        self._fitted = self.content_size.width
        room = self._fitted - sum(widths) - len(LABELS[5]) - 2 * len(LABELS) - 2  # (padding, a scrollbar)
        longest = max((len(row[0]) for row in rows), default=4)
        width = min(longest, max(12, room)) if self._fitted else min(longest, 30)
        table.clear(columns=True)
        for key, label, w in zip(KEYS, LABELS, (width, *widths, len(LABELS[5]))):
            table.add_column(label, key=key, width=w)
        for name, alias, size, quant, modified in rows:
            table.add_row(
                fmt.fit_name(name, width),
                Text(alias, accent),
                size,
                quant,
                modified,
                Text("●", success) if name in running else "",
                key=name,
            )
        names = [row[0] for row in rows]
        if keep in names:
            table.move_cursor(row=names.index(keep), animate=False)

    def aliases_of(self, model: str) -> list[str]:
        """Which of ``latest`` / ``previous`` point at this build (the same digest), e.g. ``["latest"]``."""
        if self.snapshot is None or model.rpartition(":")[2] in ALIASES:
            return []
        digests = {m["model"]: m.get("digest") for m in self.snapshot.models}
        prefix = model.rpartition(":")[0] or model
        digest = digests.get(model)
        return [alias for alias in ALIASES if digest is not None and digests.get(f"{prefix}:{alias}") == digest]

    def on_resize(self) -> None:
        if self.ready and self.snapshot is not None and self.content_size.width != self._fitted:
            self._fill(self.snapshot)

    @property
    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count or table.cursor_row < 0:
            return None
        return str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        model = next((m for m in (self.snapshot.models if self.snapshot else ()) if m["model"] == self.selected), None)
        if model:
            d = model.get("details") or {}
            self.query_one("#ollama-detail", Static).update(
                f"{model['model']} · {d.get('family', '?')} {d.get('parameter_size', '')} · {d.get('format', '')}"
                f" · digest {str(model.get('digest', ''))[:12]}"
                + "".join(f" · = {alias}" for alias in self.aliases_of(model["model"]))
            )

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_modelfile()

    # -- actions (each in a worker: Ollama answers take time, and dialogs are awaited) -------------
    def _need_model(self) -> str | None:
        if self.snapshot is None or self.snapshot.error:
            self.notify("Ollama is not reachable; see the pane for how to start it", severity="warning")
            return None
        if self.selected is None:
            self.notify("no model selected", severity="warning")
        return self.selected

    def action_refresh(self) -> None:
        self.refresh_models()

    def action_test(self) -> None:
        model = self._need_model()
        if model:
            from w4tui.ui.screens.prompt import PromptScreen

            self.app.push_screen(PromptScreen(self.app.config, model, self.app.config.verify.prompts[0]))

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_modelfile(self) -> None:
        model = self._need_model()
        if model:
            from w4tui.ui.screens.dialogs import TextViewScreen

            info = await self._call("show", model)
            if info is not None:
                await self.app.push_screen_wait(
                    TextViewScreen(f"Modelfile of {model}", info.get("modelfile") or "(empty)")
                )

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_copy(self) -> None:
        model = self._need_model()
        if model:
            from w4tui.ui.screens.dialogs import TextInputScreen

            target = await self.app.push_screen_wait(
                TextInputScreen(
                    f"Copy {model} to", model.split(":")[0] + ":", hint="a new name or tag; an existing one is replaced"
                )
            )
            if target and await self._call("copy", model, target) is not False:
                self.notify(f"copied {model} to {target}")
                self.refresh_models()

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_delete(self) -> None:
        model = self._need_model()
        if model:
            from w4tui.ui.screens.dialogs import ConfirmScreen

            if await self.app.push_screen_wait(
                ConfirmScreen(f"Delete {model} from Ollama?", "Its blobs stay while another tag uses them.", "Delete")
            ):
                if await self._call("delete", model) is not False:
                    self.notify(f"deleted {model}")
                    self.refresh_models()

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_rollback(self) -> None:
        if self.snapshot is None or self.snapshot.error:
            self.notify("Ollama is not reachable; see the pane for how to start it", severity="warning")
            return
        from w4tui.ui.screens.dialogs import ConfirmScreen

        name = self.app.config.ollama.model
        if f"{name}:previous" not in {m["model"] for m in self.snapshot.models}:
            self.notify(
                f"no {name}:previous to roll back to: it appears when a second verified build is promoted",
                severity="warning",
                timeout=8,
            )
            return
        if await self.app.push_screen_wait(
            ConfirmScreen(
                f"Roll {name}:latest back to {name}:previous?",
                "The current latest stays available under its build tag.",
                "Roll back",
            )
        ):
            result = await self._call("rollback")
            if result:
                self.notify(result)
                self.refresh_models()

    async def _call(self, name: str, *args):
        """Run an ollama_client function in a thread; an OllamaError becomes a notification (and False)."""
        import asyncio

        from w4tui import ollama_client as oc

        try:
            result = await asyncio.to_thread(getattr(oc, name), self.app.config, *args)
        except oc.OllamaError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return False
        return True if result is None else result
