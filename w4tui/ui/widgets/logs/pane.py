"""Logs: every run, newest first, and the selected run's output.log, following while it grows."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Log

from ...data.runs import RunInfo
from ..pane import Pane
from ..status import status_text

FOLLOW_S = 1.0
FIRST_READ = 256 * 1024   # the tail of a long log is enough to start with
MAX_LINES = 5000


def read_from(path, offset: int | None) -> tuple[str, int]:
    """New text of ``path`` after ``offset`` (None: its last FIRST_READ bytes) and the new offset."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, 2)
            if offset is None:
                offset = max(0, end - FIRST_READ)
            elif offset > end:  # truncated or replaced: start again
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset or 0
    cut = data.rfind(b"\n") + 1 if offset + len(data) == end else len(data)
    # Keep a last line without its newline for the next read, as the writer may be mid-line.
    text = data[:cut].decode("utf-8", "replace")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n")), offset + cut


class LogsPane(Pane):
    PANE_ID, TITLE, KEY = "logs", "Logs", "6"
    SHORT = "Logs"
    DEFAULT_CSS = """
    LogsPane #runs-table { height: 7; }
    LogsPane Log { height: 1fr; border-top: solid $foreground 25%; }
    .-wide LogsPane { layout: horizontal; }
    .-wide LogsPane #runs-table { height: 1fr; width: 52; }
    .-wide LogsPane Log { border-top: none; border-left: solid $foreground 25%; }
    """
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow", id="logs.follow", tooltip="Keep scrolling to the newest output"),
        Binding("o", "open_log", "Focus log", id="logs.focus", tooltip="Move between the run list and the log"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: tuple[RunInfo, ...] = ()
        self.run: RunInfo | None = None
        self.following = True
        self._offset: int | None = None
        self._seen: set[str] | None = None  # run ids known at the last update
        self._request: tuple | None = None  # (run, offset) to read at the loop's next round

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="row", id="runs-table")
        table.add_column("run", key="id", width=30)  # fixed: an auto width could render before it was recomputed
        table.add_column("status", key="status", width=12)
        yield table
        yield Log(max_lines=MAX_LINES, auto_scroll=True, id="run-log")

    def on_mount(self) -> None:
        self.run_loop("logs", self._follow_round, FOLLOW_S)
        pending, self.run = self.run, None  # a run chosen before this (lazily mounted) pane existed
        self.show_runs(self.runs)
        if pending is not None:
            self.select(pending)

    def show_runs(self, runs: tuple[RunInfo, ...]) -> None:
        self.runs = runs
        if not self.ready:
            return
        table = self.query_one(DataTable)
        keys = [str(row.value) for row in table.rows]
        if keys != [r.id for r in runs]:
            selected = self.run.id if self.run else None
            table.clear()
            for run in runs:
                table.add_row(run.id, status_text(run.status, self.app), key=run.id)
            if selected in [r.id for r in runs]:
                table.move_cursor(row=[r.id for r in runs].index(selected), animate=False)
        else:
            for run in runs:
                table.update_cell(run.id, "status", status_text(run.status, self.app))
        current = next((r for r in runs if self.run and r.id == self.run.id), None)
        started = next((r for r in runs if r.live and self._seen is not None and r.id not in self._seen), None)
        self._seen = {r.id for r in runs}
        if started is not None and (current is None or not current.live) and self.following:
            self.select(started)  # a run just started while nothing live was shown: follow it
        elif current is not None:
            self.run = current
            self._update_title()
        elif runs and self.run is None:
            self.select(runs[0])

    def restyle(self) -> None:
        if self.ready:
            for run in self.runs:
                self.query_one(DataTable).update_cell(run.id, "status", status_text(run.status, self.app))

    def select(self, run: RunInfo) -> None:
        """Show ``run``'s log from its tail."""
        self.run, self._offset = run, None
        if not self.ready:
            return
        self.query_one(Log).clear()
        self._update_title()
        table = self.query_one(DataTable)
        ids = [r.id for r in self.runs]
        if run.id in ids and table.cursor_row != ids.index(run.id):
            table.move_cursor(row=ids.index(run.id), animate=False)
        self._request = (run, None)
        self.poke("logs")

    def _update_title(self) -> None:
        run = self.run
        self.set_subtitle(f"{run.stage} · {run.status}" + (" · following" if run.live and self.following else "")
                          if run else "")

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        # Go by where the cursor is now, not by the event: a rebuilt table posts highlights for rows the
        # cursor has already left, and following those would bounce between two runs for ever.
        row = self.query_one(DataTable).cursor_row
        run = self.runs[row] if 0 <= row < len(self.runs) else None
        if run is not None and (self.run is None or run.id != self.run.id):
            self.select(run)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(Log).focus()

    def _follow_round(self) -> None:  # in the "logs" loop's thread
        request, self._request = self._request, None
        if request is None and self.run is not None and self.run.live and self.display and self.following:
            request = (self.run, self._offset)
        if request is not None:
            run, offset = request
            text, new_offset = read_from(run.log_path, offset)
            self.deliver("text", (run.id, offset, text, new_offset))

    def show_text(self, value: tuple) -> None:
        run_id, offset, text, new_offset = value
        if self.run is None or run_id != self.run.id or offset != self._offset:
            return  # stale: another run was selected meanwhile
        self._offset = new_offset
        if text:
            log = self.query_one(Log)
            log.auto_scroll = self.following
            log.write(text if text.endswith("\n") or not text else text + "\n")
        elif offset is None and not self.run.live:
            self.query_one(Log).write(f"(no output in {self.run.log_path})\n")

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        self._update_title()
        if self.following:
            self.query_one(Log).scroll_end(animate=False)
            if self.run is not None:
                self._request = (self.run, self._offset)
                self.poke("logs")
        self.notify("following the log" if self.following else "stopped following", timeout=2)

    def action_open_log(self) -> None:
        log, table = self.query_one(Log), self.query_one(DataTable)
        (table if log.has_focus else log).focus()
