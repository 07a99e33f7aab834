"""Ollama models: what the server has and has loaded, each model's Modelfile, and actions — test a
prompt (streaming, tokens/s), copy/tag, delete, roll back ``latest``. A server that is down is a state
shown in the pane and retried in the background, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from core import units
from core.ollama import client as oc
from core.ollama import promote as op
from w4tui.ui.panes.ollama_actions import OllamaActions
from w4tui.ui.sources import fmt
from w4tui.ui.sources.verified import VerifiedBuilds
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve

POLL_S = 5.0  # while the pane is on screen
POLL_HIDDEN_S = 60.0  # otherwise: the list is only for the "latest" marker and quick switching
KEYS = ("name", "alias", "size", "quant", "modified", "run")
LABELS = ("name", "is", "size", "quant", "modified", "loaded")


@dataclass(frozen=True)
class OllamaSnapshot:
    host: str
    models: tuple[dict, ...] = ()
    running: tuple[dict, ...] = ()
    error: str | None = None
    hint: str | None = None
    checked: float = 0.0
    verified: tuple[tuple[str, bool], ...] = ()  # (model, passed) from the newest verify run of each


def _when(value, now: float) -> str:
    if isinstance(value, datetime):
        return fmt.clock(value.timestamp(), now)
    if isinstance(value, str):
        try:
            return fmt.clock(datetime.fromisoformat(value).timestamp(), now)
        except ValueError:
            return value[:16]
    return "-"


def _alias_cell(aliases: list[str], verified: bool | None) -> str:
    """``✓ latest``: verified, and what latest points at (``+``: previous too, right after a rollback)."""
    mark = {True: "✓", False: "✗", None: ""}[verified]
    alias = aliases[0] + ("+" if len(aliases) > 1 else "") if aliases else ""
    return f"{mark} {alias}".strip()


class OllamaPane(OllamaActions, Pane):
    PANE_ID, TITLE, KEY = "ollama", "Ollama models", "4"
    SHORT = "Ollama"
    DEFAULT_CSS = """
    OllamaPane #ollama-state { height: auto; }
    OllamaPane DataTable { height: 1fr; }
    OllamaPane #ollama-detail { height: auto; max-height: 3; color: $text-muted; }
    """
    BINDINGS = [
        Binding("t", "test", "Test prompt", id="ollama.test", tooltip="Send a prompt; the answer streams in"),
        Binding(
            "a",
            "chat",
            "Chat",
            id="ollama.chat",
            show=False,  # (the footer is full at 80 columns: in ? and the palette)
            tooltip="A multi-turn chat with the model: history as Markdown, an editable system prompt",
        ),
        Binding("m", "modelfile", "Modelfile", id="ollama.modelfile", tooltip="Show the model's Modelfile"),
        Binding("c", "copy", "Copy/tag", id="ollama.copy", tooltip="Copy the model to another name or tag"),
        Binding("d,delete", "delete", "Delete", id="ollama.delete", tooltip="Delete the model (asks first)"),
        Binding("b", "rollback", "Roll back", id="ollama.rollback", tooltip="Point latest back at previous"),
        Binding(
            "p",
            "promote",
            "Promote",
            id="ollama.promote",
            tooltip="Make this verified build latest (an earlier one: a rollback to it); latest becomes previous",
        ),
        Binding("r", "refresh", "Refresh", id="ollama.refresh", tooltip="Ask the server again now"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: OllamaSnapshot | None = None
        self._last_poll = 0.0
        self._fitted = 0  # the pane width the name column was fitted to
        self.runs: tuple = ()  # the runs, for which builds passed verification
        self._verified = VerifiedBuilds()

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

        config = self.app.config
        self._last_poll = self.app.clock()
        try:
            models = tuple(oc.list_models(config))
            running = tuple(oc.running(config))
            verified = tuple(self._verified.results(self.runs).items())
            snap = OllamaSnapshot(oc.host(config), models, running, None, self._last_poll, verified=verified)
        except oc.OllamaError as exc:
            snap = OllamaSnapshot(oc.host(config), error=exc.message, hint=exc.hint, checked=self._last_poll)
        self.deliver(self.Snapshot(snap))

    def restyle(self) -> None:
        if self.ready and self.snapshot is not None:
            self.show_snapshot(self.snapshot, force=True)

    @dataclass
    class Snapshot(Delivered):
        """What the server has: models, what is loaded, the builds."""

        snapshot: OllamaSnapshot

    @on(Snapshot)
    def _snapshot_delivered(self, message: Snapshot) -> None:
        self.show_snapshot(message.snapshot)

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
            loaded = ", ".join(
                f"{m['model']} ({units.size(m.get('size_vram') or m.get('size'))})" for m in snap.running
            )
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
                _alias_cell(self.aliases_of(m["model"]), self.verified(m["model"])),
                units.size(m.get("size")),
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

    def show_runs(self, runs: tuple) -> None:
        """The runs changed: when a verify run finished, ask again now (its build gets its mark)."""
        done = {r.id for r in runs if r.stage == "verify" and not r.live}
        changed = done != {r.id for r in self.runs if r.stage == "verify" and not r.live}
        self.runs = runs
        if changed:
            self.refresh_models()

    def verified(self, model: str) -> bool | None:
        return dict(self.snapshot.verified).get(model) if self.snapshot else None

    def aliases_of(self, model: str) -> list[str]:
        """Which of ``latest`` / ``previous`` point at this build (the same digest), e.g. ``["latest"]``."""
        if self.snapshot is None or model.rpartition(":")[2] in op.POINTERS:
            return []
        digests = {m["model"]: m.get("digest") for m in self.snapshot.models}
        prefix = model.rpartition(":")[0] or model
        digest = digests.get(model)
        return [alias for alias in op.POINTERS if digest is not None and digests.get(f"{prefix}:{alias}") == digest]

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
