"""Schedule: the next night (or disabled / paused / who holds the scheduler), the night in progress and
its step, and the history of nights. Keys: run a night now, pause/resume, skip the next night, logs.

This TUI runs the scheduler itself when the schedule is enabled and no daemon holds it (it retries,
so it takes over from a holder that died); otherwise it shows the schedule read-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from core import units
from core.names import LIVE_OUTCOMES, NightOutcome, RunStatus
from w4tui.nightly.cli import set_control
from w4tui.nightly.holder import ScheduleHolder
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.status import describe_next, schedule_status, step_durations
from w4tui.runs.runner import RunError
from w4tui.ui.sources import fmt
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve

POLL_S = 2.0
OUTCOME_STYLE = {
    NightOutcome.PROMOTED: "$success",
    NightOutcome.SKIPPED: "$text-muted",
    NightOutcome.FAILED: "bold $error",
    NightOutcome.CRASHED: "bold $error",
    NightOutcome.MISSED: "$warning",
    NightOutcome.RUNNING: "bold $accent",
    NightOutcome.STARTING: "$accent",
    NightOutcome.CANCELLED: "$warning",
}
COLUMNS = ("when", "outcome", "data", "took", "build")


def _data(night: dict, short: bool) -> str:
    """The night's data file and samples: in the table without the .jsonl (the date is what differs)."""
    name = (night.get("data_file") or "").rsplit("/", 1)[-1]
    if not name:
        return "-"
    samples = night.get("samples")
    if short:
        return name.removesuffix(".jsonl") + (f" ({samples})" if samples else "")
    return name + (f" ({samples} samples)" if samples else "")


def _took(night: dict) -> str:
    if night.get("ended") and night.get("started") and night.get("steps"):
        return units.duration(night["ended"] - night["started"])
    return "…" if night["outcome"] in LIVE_OUTCOMES else "-"


class SchedulePane(Pane):
    PANE_ID, TITLE, KEY = "schedule", "Schedule", "7"
    SHORT = "Sched"
    DEFAULT_CSS = """
    SchedulePane #schedule-head { height: auto; }
    SchedulePane DataTable { height: auto; max-height: 12; overflow-x: hidden; margin-top: 1; }
    SchedulePane #night-detail { height: 1fr; margin-top: 1; }
    """
    BINDINGS = [
        Binding("n", "run_now", "Run night now", id="schedule.run_now", tooltip="Start tonight's build now (detached)"),
        Binding("p", "pause", "Pause/resume", id="schedule.pause", tooltip="Pause or resume the scheduled nights"),
        Binding("k", "skip", "Skip next", id="schedule.skip", tooltip="Skip the next scheduled night only"),
        Binding("l", "logs", "Logs", id="schedule.logs", tooltip="Show the chosen night's run in the Logs pane"),
    ]

    class ShowLogs(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    def __init__(self, holder: ScheduleHolder | None = None) -> None:
        super().__init__()
        self.status: dict | None = None
        self.holder = holder or ScheduleHolder()  # the app's; alone (a test's bare app), one of its own
        self._keys: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static("reading the schedule…", id="schedule-head")
        yield DataTable(cursor_type="row", id="nights-table")
        yield Static(id="night-detail")

    def on_mount(self) -> None:
        self.run_loop("schedule", self._poll, POLL_S, shared=False)

    # -- in the loop's thread ---------------------------------------------------------------
    def _poll(self) -> None:
        config = self.app.config
        mine = self.holder.try_hold(config)
        ledger = Ledger.open(config)
        try:
            status = schedule_status(config, ledger)
        finally:
            ledger.close()
        status["mine"] = mine
        status["notes"] = self.holder.notes + ([ledger.repaired] if ledger.repaired else [])
        self.deliver(self.Status(status))

    # -- data down -------------------------------------------------------------------------

    @dataclass
    class Status(Delivered):
        """The schedule: next night, holder, history."""

        status: dict  # w4tui.nightly.status.schedule_status(), plus mine: this TUI holds it

    @on(Status)
    def _status_delivered(self, message: Status) -> None:
        self.show_status(message.status)

    def show_status(self, status: dict) -> None:
        self.status = status
        app, muted = self.app, resolve("$text-muted", self.app)
        head = Text(describe_next(status))
        holder = "this TUI holds the scheduler" if status.get("mine") else status["holder_text"]
        head.append(f"   {holder}", muted)
        for note in status.get("notes") or []:  # a damaged ledger or job store was repaired, or cannot be
            head.append(f"\n⚠ {note}", resolve("$warning", app))
        current = status["current"]
        if current:
            head.append(f"\n▶ night {current['key']} at {current.get('step') or 'start'}", resolve("bold $accent", app))
        self.query_one("#schedule-head", Static).update(head)
        table = self.query_one(DataTable)
        widths = self._widths(table.size.width or self.size.width)
        keys = tuple((n["key"], n["outcome"], n.get("step"), len(n.get("steps") or [])) for n in status["nights"])
        if (keys, widths) != self._keys:
            self._keys = (keys, widths)
            row = table.cursor_row
            table.clear(columns=True)
            for key, width in zip(COLUMNS, widths):
                table.add_column(key, key=key, width=width)
            for night in status["nights"]:
                when = night.get("scheduled_for") or night.get("started")
                outcome = Text(night["outcome"], style=resolve(OUTCOME_STYLE.get(night["outcome"], ""), app))
                table.add_row(
                    time.strftime("%m-%d %H:%M", time.localtime(when)),
                    outcome,
                    fmt.fit_name(_data(night, short=True), widths[2]),
                    _took(night),
                    fmt.fit_name(night.get("build") or "-", widths[4]),
                    key=night["key"],
                )
            if status["nights"]:
                table.move_cursor(row=min(max(row, 0), len(status["nights"]) - 1))
        self._detail()

    @staticmethod
    def _widths(total: int) -> tuple[int, ...]:
        """Columns that fit the pane (each cell has a space either side): when, outcome and time fixed,
        data and build share the rest, cut from the front (their tails tell nights apart)."""
        rest = max(total - 2 * len(COLUMNS) - 11 - 9 - 6, 16)
        return 11, 9, rest // 2, 6, rest - rest // 2

    def on_resize(self) -> None:
        if self.status is not None:
            self.show_status(self.status)

    def selected(self) -> dict | None:
        nights = (self.status or {}).get("nights") or []
        if not nights:
            return None
        return nights[min(max(self.query_one(DataTable).cursor_row, 0), len(nights) - 1)]

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._detail()

    def _detail(self) -> None:
        night = self.selected()
        if night is not None:
            self._load_detail(night)
        else:
            self.query_one("#night-detail", Static).update(Text("No nights yet. n runs one now.", "dim"))

    @work(thread=True, exclusive=True, group="night-detail", exit_on_error=False, description="read night detail")
    def _load_detail(self, night: dict) -> None:
        tail: list[str] = []
        failed = next(
            (s for s in reversed(night.get("steps") or []) if s.get("status") not in (None, RunStatus.SUCCEEDED)), None
        )
        try:
            if failed or night.get("run"):
                tail = self.app.runner.get(failed["run"] if failed else night["run"]).log_tail(10)
        except RunError:
            pass
        self.deliver(self.Detail(night, tail))

    @dataclass
    class Detail(Delivered):
        """The chosen night and its log tail."""

        night: dict  # the ledger's night record
        tail: list[str]

    @on(Detail)
    def _detail_delivered(self, message: Detail) -> None:
        self.show_detail(message)

    def _losses(self, night: dict) -> str:
        """The night's eval losses, and the main-data one against the night before that has one."""

        def of(n: dict) -> dict:
            return next((s for s in n.get("steps") or [] if s.get("step") == "train"), {})

        mine = of(night)
        parts = [f"eval loss {mine['eval_loss']:.4f}"] if "eval_loss" in mine else []
        if "main_eval_loss" in mine:
            nights = (self.status or {}).get("nights") or []
            later = nights[nights.index(night) + 1 :] if night in nights else []
            before = next((of(n)["main_eval_loss"] for n in later if "main_eval_loss" in of(n)), None)
            trend = ""
            if before is not None:
                delta = mine["main_eval_loss"] - before
                trend = f" ({'▲' if delta > 0 else '▼'} {delta:+.4f} since the night before)"
            parts.append(f"main-data eval loss {mine['main_eval_loss']:.4f}{trend}")
        return ", ".join(parts)

    def show_detail(self, detail: Detail) -> None:
        night, tail = detail.night, detail.tail
        app, muted = self.app, resolve("$text-muted", self.app)
        text = Text(f"{night['key']}  {night['outcome']}", "bold")
        if night.get("failed_step"):
            text.append(f" at {night['failed_step']}", resolve("bold $error", app))
        if night.get("error"):
            text.append(f"\nerror: {night['error']}", resolve("bold $error", app))
        elif night.get("reason") and night["reason"] != night["outcome"]:  # not "cancelled" twice
            text.append(f"\n{night['reason']}", muted)
        # Whole here what the table's columns cut: the data file, the build, the time of each step.
        if night.get("data_file"):
            text.append(f"\ndata {_data(night, short=False)}", muted)
        if night.get("build"):
            text.append(f"\nbuild {night['build']}", muted)
        if night.get("steps"):
            text.append(f"\nsteps {step_durations(night)}", muted)
        losses = self._losses(night)
        if losses:
            text.append(f"\n{losses}", muted)
        if night.get("parent_adapter"):
            text.append(f"\nparent {fmt.path(night['parent_adapter'], app.config.base_dir)}", muted)
        if tail:
            text.append("\n-- last lines of the log --\n", muted)
            text.append("\n".join(tail))
        self.query_one("#night-detail", Static).update(text)

    # -- actions ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="schedule-action", exit_on_error=False, description="start a night")
    def action_run_now(self) -> None:
        from w4tui.nightly.scheduler import now_key, start_night  # APScheduler off the TUI's start

        try:
            run = start_night(self.app.config, now_key())
        except RunError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="warning")
            return
        self.app.call_from_thread(self.notify, f"night started: run {run.id}; it keeps running if you quit")
        self.poke("schedule")

    @work(thread=True, exclusive=True, group="schedule-action", exit_on_error=False, description="pause the schedule")
    def action_pause(self) -> None:
        self._control("resume" if (self.status or {}).get("paused") else "pause")

    @work(thread=True, exclusive=True, group="schedule-action", exit_on_error=False, description="skip a night")
    def action_skip(self) -> None:
        self._control("skip")

    def _control(self, what: str) -> None:
        ledger = Ledger.open(self.app.config)
        try:
            message = set_control(self.app.config, ledger, what)
        finally:
            ledger.close()
        self.app.call_from_thread(self.notify, message)
        self.poke("schedule")

    def action_logs(self) -> None:
        night = self.selected()
        if night is None or not night.get("run"):
            self.notify("this night has no run to show", severity="warning")
            return
        failed = next(
            (s for s in reversed(night.get("steps") or []) if s.get("status") not in (None, RunStatus.SUCCEEDED)), None
        )
        self.post_message(self.ShowLogs(failed["run"] if failed else night["run"]))
