"""Training: the current (or last) train run — progress, loss curve, learning rate, speed, ETA."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from core import units
from core.events import EventReader
from core.names import RunStatus
from w4tui.ui.sources import fmt
from w4tui.ui.sources.runs import RunInfo
from w4tui.ui.sources.training import TrainingState
from w4tui.ui.widgets.chart import LineChart
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve, set_text, status_text

FOLLOW_S = 1.0  # how often a live run's events are read; the train stage reports once per step
CHART_S = 3.0  # while a run is live the loss chart is redrawn at most this often (the head every second)


class TrainingPane(Pane, can_focus=True):
    PANE_ID, TITLE, KEY = "training", "Training", "1"
    SHORT = "Training"
    DEFAULT_CSS = """
    TrainingPane #training-head { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    TrainingPane #training-head.-empty { text-wrap: wrap; }
    TrainingPane #training-error { height: auto; }
    TrainingPane LineChart { margin-top: 1; }
    """
    BINDINGS = [
        Binding(
            "R",
            "resume",
            "Resume",
            id="training.resume",
            tooltip="Continue a cancelled, failed or crashed training from its newest checkpoint",
        ),
    ]
    RESUMABLE = (RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.CRASHED)

    class ResumeRequested(Message):
        """The user asked to resume ``run`` (a stopped train run); the screen opens its form."""

        def __init__(self, run: RunInfo) -> None:
            super().__init__()
            self.run = run

    class Memory(Message):
        """Accelerator memory from the followed run's metrics, for the memory pane."""

        def __init__(self, device: str | None, memory: dict[str, int], history: list[float]) -> None:
            super().__init__()
            self.device, self.memory, self.history = device, memory, history

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TrainingPane.Memory)

    def __init__(self) -> None:
        super().__init__()
        self._memory_version = -1
        self.run: RunInfo | None = None
        self.state = TrainingState()
        self._lock = threading.Lock()
        self._reader: EventReader | None = None
        self._charted = 0.0
        self._wanted = False  # read once even if the run is not live (a new or just finished run)

    def compose(self) -> ComposeResult:
        yield Static(id="training-head")
        yield Static(id="training-error")  # wraps: an error's hint is what to do, it must show whole
        yield LineChart(empty="no loss reported yet", id="loss-chart")

    def on_mount(self) -> None:
        self.run_loop("training", self._follow_round, FOLLOW_S)
        self.show_state(None)

    def follow(self, run: RunInfo | None) -> None:
        """Show ``run`` (a train run, or None); called whenever the runs snapshot changes."""
        if run is not None and self.run is not None and run.id == self.run.id:
            was_live, self.run = self.run.live, run
            if was_live and not run.live:
                self._wanted = True  # the events written just before the end
                self.poke("training")
            self.show_state(None)  # the head shows the run's status: now, not when the next event comes
            return
        self.run = run
        with self._lock:
            self.state = TrainingState(run_id=run.id if run else "")
            self._reader = EventReader(run.events_path) if run else None
            self._wanted = run is not None
        self.poke("training")
        self.show_state(None)

    def restyle(self) -> None:
        self.show_state(None)

    def action_resume(self) -> None:
        run = self.run
        if run is None or run.live or run.status not in self.RESUMABLE:
            what = "no training yet" if run is None else f"train run {run.id} is {run.status}"
            self.notify(f"nothing to resume: {what} (R resumes a cancelled, failed or crashed one)", severity="warning")
            return
        self.post_message(self.ResumeRequested(run))

    def _follow_round(self) -> None:  # in the "training" loop's thread
        with self._lock:
            reader, state, wanted, run = self._reader, self.state, self._wanted, self.run
            self._wanted = False
        if reader is None or not (wanted or (run is not None and run.live)):
            return
        events = reader.read()
        with self._lock:
            changed = state.apply(events) if state is self.state else False
        if changed or (run is not None and run.live and state.eta_s is not None):
            self.deliver(self.Tick())  # (a live run's ETA counts down between its reports)

    @dataclass
    class Tick(Delivered):
        """Redraw from the state (new events, or the ETA counting down): no payload, the state is the pane's."""

    @on(Tick)
    def _state_delivered(self, message: Tick) -> None:
        self.show_state()

    def show_state(self, _: object = None) -> None:
        now = self.app.clock()
        with self._lock:
            state = self.state
            head = self._head(state, now)
            # At most ~1000 points: the chart is a few hundred dots wide, and a 10-hour run has 10k steps.
            series = [_thin(state.losses), _thin(state.eval_losses)]
            version = state.version
            memory = (
                (state.device, dict(state.memory), list(state.memory_history))
                if version != self._memory_version
                else None
            )
        if memory is not None:
            self._memory_version = version
            self.post_message(self.Memory(*memory))
        head_widget = self.query_one("#training-head", Static)
        head_widget.set_class(self.run is None, "-empty")  # the no-run hint wraps whole; a run's lines cut
        set_text(head_widget, head)
        error, error_text = self.query_one("#training-error", Static), self._error(state)
        error.display = bool(error_text.plain)
        set_text(error, error_text)
        live = self.run is not None and self.run.live
        if not live or time.monotonic() - self._charted >= CHART_S:
            self._charted = time.monotonic()
            self.query_one(LineChart).update(series, version)
        self.set_subtitle("loss ━ train  ━ eval" if state.eval_losses else ("loss" if state.losses else ""))

    def _head(self, s: TrainingState, now: float) -> Text:
        app = self.app
        run = self.run
        if run is None:
            return Text.from_markup(
                "[b]No training run yet.[/b]\nPress [b]5[/b] for Stages and start "
                "[b]train[/b] (or run `w4tui run train`); its progress shows here."
            )
        muted = resolve("$text-muted", app)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{run.stage} ", "bold")
        text.append(f"{run.id}  ", muted)
        text.append_text(status_text(run.status, app))
        took = (run.ended or now) - run.started
        text.append(f"   started {fmt.clock(run.started, now)} · {units.duration(took)}", muted)
        text.append("\n")
        frac = s.fraction
        width = max(10, min(40, self.size.width - 46))
        text.append(f"{(s.phase or 'waiting')[:14]:<14} ", "bold")
        text.append(fmt.bar(frac or 0.0, width), resolve("$primary", app))
        text.append(f" {s.step}/{s.total_steps or '?'} steps", "bold")
        if frac is not None:
            text.append(f" {frac:4.0%}")
        eta = s.eta_now(now) if run.live else None
        text.append(f"  ETA {units.duration(eta)}" if eta is not None else "")
        text.append("\n")
        items = [
            ("epoch", fmt.number(s.epoch, 3)),
            ("loss", fmt.number(s.loss, 4)),
            ("eval", fmt.number(s.eval_loss, 4)),
            ("lr", f"{s.learning_rate:.2e}" if s.learning_rate is not None else "-"),
            ("tok/s", f"{s.tokens_per_second:,.0f}" if s.tokens_per_second is not None else "-"),
            ("grad", fmt.number(s.grad_norm, 3)),
        ]
        for label, value in items:
            text.append(f"{label} ", muted)
            text.append(f"{value}  ", "bold")
        text.append("\n")
        text.append("checkpoint ", muted)
        if s.last_checkpoint:
            text.append(f"step {s.last_checkpoint_step} ", "bold")
            text.append(f"{fmt.ago(s.last_checkpoint_time, now)}  ", muted)
        else:
            text.append("none yet  ", "bold")
        text.append("device ", muted)
        text.append(f"{s.device or '-'}", "bold")
        return text

    def _error(self, s: TrainingState) -> Text:
        text = Text()
        if self.run is not None and s.error:
            text.append(f"error: {s.error}", resolve("bold $error", self.app))
            if s.hint:
                text.append(f"\nhint: {s.hint}", resolve("$error", self.app))
        return text


def _thin(points: list, most: int = 1000) -> list:
    return points[:: max(1, len(points) // most)] + (points[-1:] if len(points) > most else [])
