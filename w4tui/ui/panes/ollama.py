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
OTHER_COLUMNS = 9 + 8 + 11 + 10 + 5 * 2  # the fixed columns and each column's padding


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

    def compose(self) -> ComposeResult:
        yield Static("asking Ollama…", id="ollama-state")
        table = DataTable(cursor_type="row", id="ollama-table")
        self._columns(table, 12)
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
        now = self.app.clock()
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
        table = self.query_one(DataTable)
        keep = self.selected
        table.clear(columns=True)  # explicit widths (see the artifacts pane), the name's fitted
        longest = max((len(m["model"]) + 9 for m in snap.models), default=4)
        self._columns(table, min(longest, max(16, self.size.width - 2 - OTHER_COLUMNS)) if self.size.width else longest)
        running = {m["model"]: m for m in snap.running}
        latest_digest = {m["digest"] for m in snap.models if m["model"].endswith(":latest")}
        for m in sorted(snap.models, key=lambda m: m["model"]):
            details = m.get("details") or {}
            name = Text(m["model"])
            if m["model"].split(":")[-1] not in ("latest", "previous") and m.get("digest") in latest_digest:
                name.append(" = latest", resolve("$accent", self.app))
            run = running.get(m["model"])
            table.add_row(
                name,
                fmt.size(m.get("size")),
                details.get("quantization_level") or "-",
                _when(m.get("modified_at"), now),
                Text("● " + fmt.size(run.get("size_vram") or run.get("size")), resolve("$success", self.app))
                if run
                else "",
                key=m["model"],
            )
        names = [m["model"] for m in sorted(snap.models, key=lambda m: m["model"])]
        if keep in names:
            table.move_cursor(row=names.index(keep), animate=False)

    @staticmethod
    def _columns(table: DataTable, name_width: int) -> None:
        for key, label, width in (
            ("name", "name", name_width),
            ("size", "size", 9),
            ("quant", "quant", 8),
            ("modified", "modified", 11),
            ("run", "loaded", 10),
        ):
            table.add_column(label, key=key, width=width)

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
