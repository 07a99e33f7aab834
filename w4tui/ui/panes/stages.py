"""Stages: the pipeline, each stage's last run, and keys to start (through a form), cancel and run all.

A failed run shows its error event and the tail of its output.log right here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from core import specs, units
from core.names import RunStatus
from w4tui.runs.runner import Run
from w4tui.runs.supervise import read_record
from w4tui.ui.sources import fmt
from w4tui.ui.sources.runs import RunInfo
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve, status_text

PIPELINE = "pipeline"


class StagesPane(Pane):
    PANE_ID, TITLE, KEY = "stages", "Stages", "5"
    SHORT = "Stages"
    DEFAULT_CSS = """
    StagesPane DataTable { height: auto; max-height: 10; overflow-x: hidden; }
    StagesPane #stage-detail { height: 1fr; margin-top: 1; }
    """
    BINDINGS = [
        Binding(
            "s,enter", "start", "Start…", id="stages.start", tooltip="Start the stage: edit its arguments, then launch"
        ),
        Binding("c", "cancel", "Cancel run", id="stages.cancel", tooltip="Cancel the stage's running run"),
        Binding("P", "pipeline", "Run pipeline", id="stages.pipeline", tooltip="Run all stages in order (detached)"),
        Binding("l", "logs", "Logs", id="stages.logs", tooltip="Show the stage's last run in the Logs pane"),
    ]

    class StartRequested(Message):
        """The user asked to start ``stage`` (or the pipeline); the screen opens the form."""

        def __init__(self, stage: str) -> None:
            super().__init__()
            self.stage = stage

    class CancelRequested(Message):
        def __init__(self, run: RunInfo, others: tuple[RunInfo, ...] = ()) -> None:
            super().__init__()
            self.run, self.others = run, others

    class ShowLogs(Message):
        def __init__(self, run: RunInfo) -> None:
            super().__init__()
            self.run = run

    def __init__(self) -> None:
        super().__init__()
        self.runs: tuple[RunInfo, ...] = ()
        self._detail_key: tuple | None = None

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="row", zebra_stripes=False, id="stages-table")
        table.add_column("stage", key="stage", width=9)
        table.add_column("status", key="status", width=12)
        table.add_column("ended", key="ended", width=13)
        table.add_column("took", key="took", width=7)
        for name in (*specs.NAMES, PIPELINE):
            table.add_row(name, "", "", "", key=name)
        yield table
        yield Static(id="stage-detail")

    def on_mount(self) -> None:
        self.show_runs(self.runs)

    # -- data down -------------------------------------------------------------------------
    def show_runs(self, runs: tuple[RunInfo, ...]) -> None:
        self.runs = runs
        if not self.ready:
            return
        table = self.query_one(DataTable)
        now = self.app.clock()
        for name in (*specs.NAMES, PIPELINE):
            last = self.last_run(name)
            ended = (
                fmt.clock(last.ended, now)
                if last and last.ended
                else ("from " + fmt.clock(last.started, now) if last else "")
            )
            took = units.duration(last.ended - last.started) if last and last.ended else ""
            for column, value in (
                ("status", status_text(last.status if last else None, self.app)),
                ("ended", ended),
                ("took", took),
            ):
                table.update_cell(name, column, value)
        self._update_detail()

    def restyle(self) -> None:
        self._detail_key = None
        self.show_runs(self.runs)

    def last_run(self, stage: str) -> RunInfo | None:
        return next((r for r in self.runs if r.stage == stage), None)

    @property
    def selected(self) -> str:
        table = self.query_one(DataTable)
        names = (*specs.NAMES, PIPELINE)
        return names[min(max(table.cursor_row, 0), len(names) - 1)]

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._update_detail()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_start()

    def _update_detail(self) -> None:
        stage = self.selected
        run = self.last_run(stage)
        key = (stage, run)
        if key == self._detail_key:
            return
        self._detail_key = key
        if run is None:
            self.query_one("#stage-detail", Static).update(self._describe(stage, None, None, []))
        else:
            self._load_detail(stage, run)

    @work(thread=True, exclusive=True, group="stage-detail", exit_on_error=False, description="read run detail")
    def _load_detail(self, stage: str, run: RunInfo) -> None:
        full = Run(run.dir, read_record(run.dir))
        error = full.error() if run.status in (RunStatus.FAILED, RunStatus.CRASHED, RunStatus.CANCELLED) else None
        tail = full.log_tail(12) if run.status in (RunStatus.FAILED, RunStatus.CRASHED) else []
        self.deliver(self.Detail(stage, run, error, tail))

    @dataclass
    class Detail(Delivered):
        """The chosen stage: its last run, error event and log tail."""

        stage: str
        run: RunInfo
        error: dict | None
        tail: list[str]

    @on(Detail)
    def _detail_delivered(self, message: Detail) -> None:
        self.show_detail(message)

    def show_detail(self, detail: Detail) -> None:
        stage, run, error, tail = detail.stage, detail.run, detail.error, detail.tail
        if stage == self.selected:
            self.query_one("#stage-detail", Static).update(self._describe(stage, run, error, tail))

    def _describe(self, stage: str, run: RunInfo | None, error: dict | None, tail: list[str]) -> Text:
        app, muted = self.app, resolve("$text-muted", self.app)
        title = specs.BY_NAME[stage].title if stage in specs.BY_NAME else "All stages, in order"
        text = Text()
        text.append(f"{title}\n", "bold")
        if run is None:
            text.append("Never run. s or enter starts it with its arguments from the config (editable first).", muted)
            return text
        text.append(f"{run.id}  ")
        text.append_text(status_text(run.status, app))
        if run.pid:
            text.append(f"  pid {run.pid}", muted)
        if run.exit_code is not None:
            text.append(f"  exit {run.exit_code}", muted)
        if run.output:
            text.append(f"\noutput {fmt.path(run.output, app.config.base_dir)}", muted)
        if error:
            text.append(f"\nerror: {error.get('message', '')}", resolve("bold $error", app))
            if error.get("hint"):
                text.append(f"\nhint: {error['hint']}", resolve("$warning", app))
        if tail:
            text.append("\n-- last lines of output.log --\n", muted)
            text.append("\n".join(tail))
        if run.live:
            text.append("\nc cancels it; l follows its log.", muted)
        return text

    # -- actions ---------------------------------------------------------------------------
    def action_start(self) -> None:
        self.post_message(self.StartRequested(self.selected))

    def action_pipeline(self) -> None:
        self.post_message(self.StartRequested(PIPELINE))

    def action_cancel(self) -> None:
        stage = self.selected
        run = self.last_run(stage)
        if run is None or not run.live:
            self.notify(f"no {stage} run is running", severity="warning")
            return
        others = (
            tuple(r for r in self.runs if r.live and r.started >= run.started and r.id != run.id)
            if stage == PIPELINE
            else ()
        )
        self.post_message(self.CancelRequested(run, others))

    def action_logs(self) -> None:
        run = self.last_run(self.selected)
        if run is None:
            self.notify(f"{self.selected} has no runs yet", severity="warning")
            return
        self.post_message(self.ShowLogs(run))
