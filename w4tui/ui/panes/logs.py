"""Logs: every run, newest first, and the selected run's output.log, following while it grows."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Log, Static

from w4tui.ui.sources.runs import RunInfo
from w4tui.ui.widgets.dialogs import TextInputScreen
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import set_text, status_text

FOLLOW_S = 2.0  # the log view repaints every line as it scrolls: every other second is enough
FIRST_READ = 256 * 1024  # the tail of a long log is enough to start with
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
    LogsPane .output { height: 1fr; border-top: solid $foreground 25%; }
    LogsPane #log-tail { text-wrap: nowrap; text-overflow: ellipsis; }
    LogsPane #run-log { display: none; }
    LogsPane.-scrolling #run-log { display: block; }
    LogsPane.-scrolling #log-tail { display: none; }
    .-wide LogsPane { layout: horizontal; }
    .-wide LogsPane #runs-table { height: 1fr; width: 52; }
    .-wide LogsPane .output { border-top: none; border-left: solid $foreground 25%; }
    """
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow", id="logs.follow", tooltip="Show the newest output as it comes"),
        Binding(
            "o",
            "open_log",
            "Scroll log",
            id="logs.focus",
            tooltip="Stop following and scroll the whole log; again: back to the run list",
        ),
        Binding("slash", "search", "Search", id="logs.search", tooltip="Find text in the log (n / N: next / previous)"),
        Binding("n", "next_match(1)", "Next match", id="logs.next", show=False, tooltip="The next match of the search"),
        Binding(
            "N",
            "next_match(-1)",
            "Previous match",
            id="logs.previous",
            show=False,
            tooltip="The previous match of the search",
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: tuple[RunInfo, ...] = ()
        self.run: RunInfo | None = None
        self.following = True
        self._offset: int | None = None
        self._seen: set[str] | None = None  # run ids known at the last update
        self._request: tuple | None = None  # (run, offset) to read at the loop's next round
        self.lines: deque[str] = deque(maxlen=MAX_LINES)  # the selected run's output (its tail)
        self.search: str = ""  # the text `/` looks for (case-insensitive)
        self.match: int | None = None  # the line of self.lines the log shows at its top for it

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="row", id="runs-table")
        table.add_column("run", key="id", width=30)  # (auto width raced with the first rows)
        table.add_column("status", key="status", width=12)
        yield table
        # Following shows the newest lines in a plain view: repainting it is cheap. The scrollable Log
        # reflows the screen on every write, so it is only filled when the user wants to scroll.
        yield Static(id="log-tail", classes="output", markup=False)
        yield Log(max_lines=MAX_LINES, auto_scroll=False, id="run-log", classes="output")

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
            ended = self.run is not None and self.run.live and not current.live
            self.run = current
            self._update_title()
            if ended:  # the lines written between the last round and the end, which no round follows
                self._request = (current, self._offset)
                self.poke("logs")
        elif runs and self.run is None:
            self.select(runs[0])

    def on_show(self) -> None:
        # Rounds skip a hidden pane: what was written meanwhile is read now.
        if self.ready and self.run is not None and self.following:
            self._request = (self.run, self._offset)
            self.poke("logs")

    def restyle(self) -> None:
        if self.ready:
            for run in self.runs:
                self.query_one(DataTable).update_cell(run.id, "status", status_text(run.status, self.app))

    def select(self, run: RunInfo) -> None:
        """Show ``run``'s log from its tail."""
        self.run, self._offset = run, None
        if not self.ready:
            return
        self.lines.clear()
        self.query_one(Log).clear()
        self._show_tail()
        self._update_title()
        table = self.query_one(DataTable)
        ids = [r.id for r in self.runs]
        if run.id in ids and table.cursor_row != ids.index(run.id):
            table.move_cursor(row=ids.index(run.id), animate=False)
        self._request = (run, None)
        self.poke("logs")

    def _update_title(self) -> None:
        run = self.run
        self.set_subtitle(
            f"{run.stage} · {run.status}" + (" · following" if run.live and self.following else "") if run else ""
        )

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
        self.action_open_log()

    def _follow_round(self) -> None:  # in the "logs" loop's thread
        request, self._request = self._request, None
        if request is None and self.run is not None and self.run.live and self.display and self.following:
            request = (self.run, self._offset)
        if request is not None:
            run, offset = request
            text, new_offset = read_from(run.log_path, offset)
            self.deliver(self.Text(run.id, offset, text, new_offset))

    @dataclass
    class Text(Delivered):
        """New text of the followed log."""

        run_id: str
        offset: int | None  # where the read started (None: the tail)
        text: str
        new_offset: int

    @on(Text)
    def _text_delivered(self, message: Text) -> None:
        self.show_text(message)

    def show_text(self, new: Text) -> None:
        run_id, offset, text, new_offset = new.run_id, new.offset, new.text, new.new_offset
        if self.run is None or run_id != self.run.id:
            return  # stale: another run was selected meanwhile
        if offset != self._offset:  # two reads of one run crossed: read on from where the shown text ends
            if self._offset is not None and new_offset > self._offset:
                self._request = (self.run, self._offset)
                self.poke("logs")
            return
        self._offset = new_offset
        if not text and offset is None and not self.run.live:
            text = f"(no output in {self.run.log_path})\n"
        if text:
            self.lines.extend(text.rstrip("\n").split("\n"))
            if self.following:
                self._show_tail()
            else:
                self.query_one(Log).write(text if text.endswith("\n") else text + "\n")

    def _show_tail(self) -> None:
        tail = self.query_one("#log-tail", Static)
        height = tail.size.height or 24
        count = len(self.lines)
        set_text(tail, Text("\n".join(self.lines[i] for i in range(max(0, count - height), count)), no_wrap=True))

    def on_resize(self) -> None:
        if self.ready and self.following:
            self._show_tail()

    def _set_following(self, following: bool) -> None:
        self.following = following
        log = self.query_one(Log)
        self.set_class(not following, "-scrolling")
        if following:
            self._show_tail()
            if self.run is not None:
                self._request = (self.run, self._offset)
                self.poke("logs")
        else:
            log.clear()
            log.write("\n".join(self.lines) + "\n" if self.lines else "")
            log.scroll_end(animate=False)
        self._update_title()

    def action_toggle_follow(self) -> None:
        self._set_following(not self.following)
        if not self.following and not self.query_one(DataTable).has_focus:
            self.query_one(Log).focus()
        self.notify("following the log" if self.following else "stopped following", timeout=2)

    def action_open_log(self) -> None:
        log, table = self.query_one(Log), self.query_one(DataTable)
        if log.has_focus:
            table.focus()
            return
        if self.following:
            self._set_following(False)
        log.focus()

    # -- search ------------------------------------------------------------------------------
    @work(exclusive=True, group="logs-search", exit_on_error=False)
    async def action_search(self) -> None:

        if self.run is None:
            self.notify("no run selected", severity="warning")
            return
        text = await self.app.push_screen_wait(
            TextInputScreen(
                f"Search the log of {self.run.id}", self.search, hint="case-insensitive; n / N: next / previous match"
            )
        )
        if text:
            self.search, self.match = text, None
            self.action_next_match(-1)  # from the end: the newest match first

    def action_next_match(self, step: int) -> None:
        """Show the next (``step`` 1) or previous (-1) line holding the search text, wrapping around."""
        if not self.search:
            self.notify("nothing to find yet: / searches", severity="warning")
            return
        needle = self.search.lower()
        found = [i for i, line in enumerate(self.lines) if needle in line.lower()]
        if not found:
            self.notify(f"'{self.search}' is not in the last {len(self.lines)} lines", severity="warning", timeout=4)
            return
        if self.match is None:
            index = len(found) - 1 if step < 0 else 0
        else:
            after = [k for k, i in enumerate(found) if (i > self.match if step > 0 else i < self.match)]
            index = (after[0] if step > 0 else after[-1]) if after else (0 if step > 0 else len(found) - 1)
        self.match = found[index]
        if self.following:
            self._set_following(False)  # the scrollable log holds every line; following shows only the tail
        log = self.query_one(Log)
        log.focus()
        line = self.match
        self.call_after_refresh(lambda: log.scroll_to(y=max(0, line - 2), animate=False))
        self.set_subtitle(f"'{self.search}' {index + 1}/{len(found)} · line {line + 1}")
