"""Artifacts: adapters, checkpoints, merged models and GGUF files on disk (GGUF metadata from the
header), which is latest, where each came from; inspect, delete, deploy and verify them."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from core import units
from w4tui.ui.sources import fmt
from w4tui.ui.sources.artifacts import Artifact, ArtifactScanner
from w4tui.ui.sources.runs import RunInfo
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve

RESCAN_S = 15.0  # disk changes nobody announced (a file copied in by hand) show up this late at most
OTHER_COLUMNS = 10 + 3 + 9 + 7 + 11 + 6 * 2  # the fixed columns and each column's padding


class ArtifactsPane(Pane):
    PANE_ID, TITLE, KEY = "artifacts", "Artifacts", "3"
    SHORT = "Artifacts"
    DEFAULT_CSS = """
    ArtifactsPane DataTable { height: 1fr; }
    ArtifactsPane #artifact-detail { height: 4; color: $text-muted; }
    """
    BINDINGS = [
        Binding("i", "inspect", "Inspect", id="artifacts.inspect", tooltip="Everything known about the artifact"),
        Binding("d,delete", "delete", "Delete", id="artifacts.delete", tooltip="Delete it from disk (asks first)"),
        Binding("D", "deploy", "Deploy", id="artifacts.deploy", tooltip="Deploy a GGUF file to Ollama"),
        Binding("v", "verify", "Verify", id="artifacts.verify", tooltip="Verify the Ollama build made from it"),
        # not in the footer (80 columns are full): ? and the inspect view name them
        Binding("m", "mark", "Mark", id="artifacts.mark", tooltip="Mark a build to compare another with", show=False),
        Binding("c", "compare", "Compare", id="artifacts.compare", tooltip="Compare with the marked build", show=False),
        Binding("e", "eval", "Eval", id="artifacts.eval", tooltip="Measure what each quantization costs", show=False),
        Binding("r", "rescan", "Rescan", id="artifacts.rescan", tooltip="Scan the outputs directory again"),
    ]

    class ArtifactAction(Message):
        """An action on an artifact that needs the screen (a confirm, a form, a modal): one class each."""

        def __init__(self, artifact: Artifact) -> None:
            super().__init__()
            self.artifact = artifact

    class Inspect(ArtifactAction):
        """Show everything known about the artifact."""

    class Delete(ArtifactAction):
        """Delete it from disk, after asking."""

    class Deploy(ArtifactAction):
        """Open the deploy form for this GGUF."""

    class Verify(ArtifactAction):
        """Open the verify form for the Ollama build made from it."""

    class Eval(ArtifactAction):
        """Open the eval form for this GGUF build."""

    class Compare(ArtifactAction):
        """Show this build beside the marked one."""

        def __init__(self, artifact: Artifact, marked: Artifact) -> None:
            super().__init__(artifact)
            self.marked = marked

    def __init__(self, scanner=None) -> None:
        super().__init__()
        self.scanner = scanner
        self.runs: tuple[RunInfo, ...] = ()
        self.artifacts: list[Artifact] = []
        self._finished: frozenset[str] = frozenset()

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="row", id="artifacts-table")
        self._columns(table, 12)
        yield table
        yield Static(id="artifact-detail")

    def on_mount(self) -> None:
        self.call_after_refresh(lambda: self.run_loop("artifacts", self._scan, RESCAN_S))

    def show_runs(self, runs: tuple[RunInfo, ...]) -> None:
        """Rescan when a run finished (it may have made or removed something)."""
        self.runs = runs
        finished = frozenset(r.id for r in runs if not r.live)
        if finished != self._finished:
            self._finished = finished
            if self.ready:  # else on_mount scans
                self.rescan()

    def rescan(self) -> None:
        """Scan now."""
        self.poke("artifacts")

    def _scan(self) -> None:  # in the "artifacts" loop's thread
        if self.scanner is None:
            self.scanner = ArtifactScanner(self.app.config)
        self.deliver(self.Scanned(self.scanner.scan(self.runs)))

    def restyle(self) -> None:
        if self.ready and self.artifacts:
            self.show_artifacts(self.artifacts, force=True)

    @dataclass
    class Scanned(Delivered):
        """A scan of the outputs tree."""

        artifacts: list[Artifact]

    @on(Scanned)
    def _artifacts_delivered(self, message: Scanned) -> None:
        self.show_artifacts(message.artifacts)

    def show_artifacts(self, artifacts: list[Artifact], force: bool = False) -> None:
        if artifacts == self.artifacts and self.query_one(DataTable).row_count and not force:
            return
        self.artifacts = artifacts
        table = self.query_one(DataTable)
        keep = self.selected.path if self.selected else None
        # Explicit widths, the name's fitted to the names and the pane: an auto width could be drawn
        # before it was recomputed, and a too-wide one pushes the dates out of an 80-column terminal.
        fits = max(12, self.size.width - 2 - OTHER_COLUMNS) if self.size.width else 40  # (2: a scrollbar)
        table.clear(columns=True)
        width = min(fits, max((len(shown_name(a)) for a in artifacts), default=4))
        self._columns(table, width)
        now = self.app.clock()
        success, error, accent, warning = (resolve(v, self.app) for v in ("$success", "$error", "$accent", "$warning"))
        for a in artifacts:
            kind = Text(a.kind, style="dim" if a.kind == "checkpoint" else "")
            note = Text()  # details are in the line under the table
            note.append("★" if a.latest else ("◐" if a.incomplete else " "), warning if a.incomplete else accent)
            if a.verified is not None:
                note.append("✓" if a.verified else "✗", success if a.verified else error)
            elif a.deployed:
                note.append("→", accent)
            quant = a.quant or (a.gguf.quantization if a.gguf and not a.gguf.error else "")
            table.add_row(
                kind,
                fmt.fit(shown_name(a), width),
                note,
                units.size(a.bytes),
                quant,
                fmt.clock(a.modified, now),
                key=a.path,
            )
        if not artifacts:
            self.query_one("#artifact-detail", Static).update(
                f"Nothing in {fmt.path(self.app.config.paths.outputs, self.app.config.base_dir)} yet: "
                "train, merge and convert to fill it."
            )
        paths = [a.path for a in artifacts]
        if keep in paths:
            table.move_cursor(row=paths.index(keep), animate=False)

    @staticmethod
    def _columns(table: DataTable, name_width: int) -> None:
        for key, label, width in (
            ("kind", "kind", 10),
            ("name", "name", name_width),
            ("note", "", 3),
            ("size", "size", 9),
            ("quant", "quant", 7),
            ("when", "modified", 11),
        ):
            table.add_column(label, key=key, width=width)

    def on_resize(self) -> None:
        if self.ready and self.artifacts:
            self.show_artifacts(self.artifacts, force=True)

    @property
    def selected(self) -> Artifact | None:
        table = self.query_one(DataTable)
        if not self.artifacts or table.cursor_row < 0 or table.cursor_row >= len(self.artifacts):
            return None
        return self.artifacts[table.cursor_row]

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        a = self.selected
        if a is not None:
            self.query_one("#artifact-detail", Static).update(describe(a, self.app.config.base_dir))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_inspect()

    def _act(self, message: type[ArtifactAction]) -> None:
        a = self.selected
        if a is None:
            self.notify("no artifact selected", severity="warning")
        else:
            self.post_message(message(a))

    def action_inspect(self) -> None:
        self._act(self.Inspect)

    def action_delete(self) -> None:
        self._act(self.Delete)

    def action_deploy(self) -> None:
        a = self.selected
        if a is not None and a.kind != "gguf":
            self.notify("deploy takes a GGUF file: pick a gguf row (merge and convert make one)", severity="warning")
            return
        self._act(self.Deploy)

    def action_verify(self) -> None:
        a = self.selected
        if a is not None and not a.deployed:
            self.notify(
                f"{a.name} is not deployed to Ollama yet: deploy it first (D on a GGUF row)", severity="warning"
            )
            return
        self._act(self.Verify)

    def action_eval(self) -> None:
        a = self.selected
        if a is not None and a.kind != "gguf":
            self.notify("eval takes a GGUF build: pick a gguf row (its F16 or a quantized file)", severity="warning")
            return
        self._act(self.Eval)

    def action_mark(self) -> None:
        self.marked = self.selected
        if self.marked is not None:
            self.notify(f"marked {self.marked.name}: select another build and press c to compare")

    def action_compare(self) -> None:
        a, marked = self.selected, getattr(self, "marked", None)
        if marked is None:
            self.notify("mark a build first (m), then select another and press c", severity="warning")
        elif a is not None:
            self.post_message(self.Compare(a, marked))

    def action_rescan(self) -> None:
        self.rescan()


def shown_name(a: Artifact) -> str:
    """The name in the table: a GGUF without its extension (the kind column says gguf)."""
    return a.name.removesuffix(".gguf") if a.kind == "gguf" else a.name


def describe(a: Artifact, base) -> str:
    """A few lines about an artifact for the detail under the table."""
    flags = [
        text
        for on, text in (
            (a.latest, "★ latest of its kind"),
            (a.incomplete, "◐ incomplete: the training stopped before writing it; R in Training resumes it"),
            (a.verified is True, "✓ verified"),
            (a.verified is False, "✗ failed verification"),
            (bool(a.deployed), "→ deployed as " + ", ".join(a.deployed)),
        )
        if on
    ]
    parts = [fmt.path(a.path, base) + ("  ·  " + "  ".join(flags) if flags else "")]
    if a.gguf and not a.gguf.error:
        g = a.gguf
        parts.append(
            f"{g.architecture} · {g.quantization} · {g.tensors} tensors · ctx {g.context_length or '?'}"
            f" · {g.parameters / 1e6:,.1f}M params"
        )
    elif a.gguf and a.gguf.error:
        parts.append(f"unreadable: {a.gguf.error}")
    if a.parent:
        parts.append(f"from {fmt.path(a.parent, base)}" + (f" (run {a.run_id})" if a.run_id else ""))
    return "\n".join(parts)
