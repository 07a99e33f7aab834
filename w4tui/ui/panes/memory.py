"""Memory & load: who holds the memory and how the machine copes. GPU use and memory, memory
pressure, power and thermal state (``w4tui.monitors``: ioreg/sysctl/pmset on macOS, NVML elsewhere),
Ollama's loaded models, the training's own accelerator figures, and RAM, swap, CPU, load and free
disk (psutil). What cannot be measured here says so in its row.

Every figure is shown whole: a row that does not fit wraps under its label rather than being cut, and
bars, sparklines and the chart are left out first. Bytes are GB of 10^9.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from core.events import EventReader
from core.names import EventKind
from core.ollama.client import host
from w4tui.monitors.sampler import MachineSample as MachineFigures  # the message below is MachineSample
from w4tui.monitors.sampler import MachineSampler, ollama_ps
from w4tui.ui.sources import fmt
from w4tui.ui.sources.system import (
    HISTORY,
    SystemHistory,
    SystemSample,
    SystemSampler,
    accelerator_rows,
    machine_rows,
    system_rows,
    warning_rows,
)
from w4tui.ui.widgets.chart import LineChart
from w4tui.ui.widgets.pane import Delivered, Pane
from w4tui.ui.widgets.status import resolve, set_text

SAMPLE_S = 4.0
HIDDEN_S = 30.0  # machine figures while the pane is off screen (fresh enough for when it is shown)
OLLAMA_S = 15.0  # Ollama's loaded models change when a model loads or expires: no need to ask often
LABEL = 9  # labels are at most 8 characters
WIDE_ROW = 60  # from this width rows get a bar and a sparkline
VALUE = 34
CHART_LINES = 6  # the chart and its margin


class MemoryPane(Pane, can_focus=True):
    PANE_ID, TITLE, KEY = "memory", "Memory & load", "2"
    SHORT = "Memory"
    DEFAULT_CSS = """
    MemoryPane #memory-scroll { height: auto; max-height: 100%; scrollbar-size-vertical: 1; }
    MemoryPane #memory-body { height: auto; text-wrap: nowrap; }
    MemoryPane #load-chart { margin-top: 1; min-height: 5; }
    """

    def __init__(self, sampler=None, machine=None) -> None:
        super().__init__()
        self.sampler = sampler  # a SystemSampler, made on first use in a worker when None
        # A MachineSampler (w4tui.monitors.sampler); a test's system sampler may carry a scripted one.
        self.machine_sampler = machine or getattr(sampler, "machine", None)
        self.history = SystemHistory()
        self.machine = None  # the newest MachineSample
        self.gpu_history: deque = deque(maxlen=HISTORY)
        self.device: str | None = None
        self.accelerator: dict[str, int] = {}
        self.accelerator_history: list[float] = []
        self._backfilled = False
        self._ollama_at = float("-inf")
        self._ollama_models = None
        self._delivered = None  # the last machine sample handed to the UI
        self.warnings: list[dict] = []  # the machine warnings (log events) of the live training, newest last
        self._watched: tuple[str, object] | None = None  # (run id, EventReader) of the live training

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="memory-scroll", can_focus=False):  # on a short terminal it scrolls, never cuts
            yield Static(id="memory-body")
        yield LineChart(empty="", y_range=(0, 100), id="load-chart", x_format=_ago, y_format=lambda y: f"{y:.0f}%")

    def on_mount(self) -> None:
        # After the first frame (it imports psutil), then every SAMPLE_S. The machine tools may block
        # (a process, an HTTP call) so they get a thread of their own, off the shared ticker.
        def start() -> None:
            self.run_loop("memory", self._sample, SAMPLE_S)
            self.run_loop("machine", self._sample_machine, lambda: SAMPLE_S if self.display else HIDDEN_S, shared=False)

        self.call_after_refresh(start)
        self.on_resize()

    def on_resize(self, _=None) -> None:
        if self.ready and self.display:  # a hidden pane is drawn when it is shown
            body = self._body()
            lines = body.plain.count("\n") + 1
            if lines > self.size.height:  # it will scroll: leave the scrollbar its column
                body = self._body(self.size.width - 1)
                lines = body.plain.count("\n") + 1
            set_text(self.query_one("#memory-body", Static), body)
            chart = self.query_one(LineChart)
            show_chart = self.size.height - lines >= CHART_LINES
            if chart.display != show_chart:
                chart.display = show_chart

    def restyle(self) -> None:
        self.on_resize()

    def on_show(self) -> None:
        self.on_resize()
        self._chart()
        self.poke("machine")

    def show_accelerator(self, device: str | None, memory: dict[str, int], history: list[float]) -> None:
        self.device, self.accelerator, self.accelerator_history = device, memory, history
        self.on_resize()

    # -- sampling (worker threads) -----------------------------------------------------------
    def _sample(self) -> None:  # in the "memory" loop's thread
        if self.sampler is None:
            self.sampler = SystemSampler(self.app.config.paths.outputs)
        if not self._backfilled:
            self._backfilled = True
            self.deliver(self.Backfill(self.sampler.backfill()))
        self.deliver(self.Sample(self.sampler.sample()))

    def _sample_machine(self) -> None:  # in the "machine" loop's thread
        if self.machine_sampler is None:
            self.machine_sampler = MachineSampler(ollama=self._ollama_models_now)
        self._read_warnings()
        sample = self.machine_sampler.sample()
        previous = self._delivered
        if previous is None or dataclasses.replace(sample, time=previous.time) != previous:
            self._delivered = sample  # nothing changed (most rounds on Linux): no message, no repaint
            self.deliver(self.MachineSample(sample))

    def show_runs(self, runs) -> None:
        """The live training, whose machine warnings (from its supervisor's watch) this pane shows."""
        train = next((r for r in runs if r.stage == "train" and r.live), None)
        if train is None:
            self._watched = None
        elif self._watched is None or self._watched[0] != train.id:
            self._watched = (train.id, EventReader(train.events_path))
            self.warnings = []
            self.poke("machine")

    def _read_warnings(self) -> None:  # in the "machine" loop's thread
        watched = self._watched
        if watched is None:
            return
        new = [
            e
            for e in watched[1].read()
            if e.get("kind") == EventKind.LOG
            and e.get("level") == "warning"
            and e.get("source") in ("monitor", "preflight")
        ]
        if new:
            self.deliver(self.Warnings(watched[0], new))

    @dataclass
    class Warnings(Delivered):
        """New machine warnings of the live training."""

        run_id: str
        events: list[dict]  # its log events from the monitor or pre-flight

    @on(Warnings)
    def _warnings_delivered(self, message: Warnings) -> None:
        self.show_warnings(message)

    def show_warnings(self, found: Warnings) -> None:
        run_id, events = found.run_id, found.events
        if self._watched is None or self._watched[0] != run_id:
            return  # a training that has ended since
        self.warnings = (self.warnings + events)[-2:]
        for event in events:
            self.notify(event.get("message", ""), title="training", severity="warning", timeout=10)
        self.on_resize()

    def _ollama_models_now(self) -> list[dict]:
        """/api/ps, asked every OLLAMA_S (a failure is asked again next round)."""
        now = time.monotonic()
        if self._ollama_models is None or now - self._ollama_at >= OLLAMA_S:
            self._ollama_at = now
            self._ollama_models = None
            self._ollama_models = ollama_ps(host(self.app.config))
        return self._ollama_models

    # -- results (UI thread) -----------------------------------------------------------------

    @dataclass
    class Backfill(Delivered):
        """The samples of the minutes before the pane opened."""

        samples: list[SystemSample]

    @on(Backfill)
    def _backfill_delivered(self, message: Backfill) -> None:
        self.show_backfill(message.samples)

    def show_backfill(self, samples: list[SystemSample]) -> None:
        for sample in samples:
            self.history.add(sample)
        self.on_resize()
        self._chart()

    @dataclass
    class Sample(Delivered):
        """A new system sample."""

        sample: SystemSample

    @on(Sample)
    def _system_delivered(self, message: Sample) -> None:
        self.show_system(message.sample)

    def show_system(self, sample: SystemSample) -> None:
        latest = self.history.latest
        if latest is not None and sample.time <= latest.time:
            return  # nothing new (a sampler that could not measure again)
        self.history.add(sample)
        self.on_resize()
        self._chart()

    @dataclass
    class MachineSample(Delivered):
        """A changed machine sample (GPU, pressure, power, Ollama's models)."""

        sample: MachineFigures

    @on(MachineSample)
    def _machine_delivered(self, message: MachineSample) -> None:
        self.show_machine(message.sample)

    def show_machine(self, sample) -> None:
        new = self.machine is None or sample.time > self.machine.time
        self.machine = sample
        if sample.gpus and new:
            self.gpu_history.append(sample.gpus[0].utilization)
        self.on_resize()

    def _chart(self) -> None:
        """CPU and RAM, in percent, over the kept history (minutes before the newest sample)."""
        h, latest = self.history, self.history.latest
        if latest is None or not self.display:
            return
        times = [(t - latest.time) / 60 for t in h.times]
        ram = [(x, used / latest.ram_total * 100) for x, used in zip(times, h.ram)] if latest.ram_total else []
        self.query_one(LineChart).update([list(zip(times, h.cpu)), ram], len(h.times) and id(latest))
        self.set_subtitle("CPU % ━  RAM % ━")

    # -- drawing -----------------------------------------------------------------------------
    def _body(self, width: int | None = None) -> Text:
        self._width = max(20, self.size.width if width is None else width)
        styles = {
            "muted": "$text-muted",
            "bar": "$primary",
            "spark": "$accent",
            "warn": "bold $warning",
            "bad": "bold $error",
        }
        self._styles = {"value": "bold", **{k: resolve(v, self.app) for k, v in styles.items()}}
        self._muted, self._bar, self._spark = self._styles["muted"], self._styles["bar"], self._styles["spark"]
        text = Text(no_wrap=True, overflow="crop")
        rows = [
            *warning_rows(self.warnings),
            *machine_rows(self.machine, list(self.gpu_history), self.app.clock()),
            *accelerator_rows(self.device, self.accelerator, self.accelerator_history),
            *system_rows(self.history, self._width >= WIDE_ROW, self._width - LABEL),
        ]
        for label, units, gauge in rows:
            self._row(text, label, units, gauge)
        text.rstrip()
        return text

    def _row(self, text: Text, label: str, units: list[tuple[str, str]], gauge=None) -> None:
        """One figure: its label, a bar and sparkline when the row is wide enough, then its parts, which
        wrap (whole) under the label instead of being cut."""
        width = self._width
        text.append(f"{label[: LABEL - 1]:<{LABEL}}", self._muted)
        col = LABEL
        if gauge is not None and width >= WIDE_ROW:
            fraction, history, high = gauge
            bar_w = 10
            text.append(fmt.bar(fraction, bar_w) + " ", self._bar)
            col += bar_w + 1
            value = " ".join(u for u, _ in units)
            value_w = max(len(value), VALUE)  # sparklines start in one column while the values fit
            spark_w = width - col - value_w - 2
            if history and spark_w >= 8:
                for i, (unit, style) in enumerate(units):
                    text.append(("" if i == 0 else " ") + unit, self._styles[style])
                text.append(" " * (value_w - len(value) + 2))
                text.append(fmt.sparkline(history, min(spark_w, 30), low=0, high=high), self._spark)
                text.append("\n")
                return
        first = True
        for unit, style in units:
            for piece in _pieces(unit, width):
                gap = 0 if first else 1
                if col + gap + len(piece) > width and col > 0:
                    # Wrap under the label; a piece too long for that takes a line of its own.
                    indent = LABEL if LABEL + len(piece) <= width else 0
                    text.append("\n" + " " * indent)
                    col, gap = indent, 0
                text.append(" " * gap + piece, self._styles[style])
                col += gap + len(piece)
                first = False
        text.append("\n")


def _pieces(unit: str, room: int) -> list[str]:
    """Only a unit longer than a whole line is split: at its spaces (a sentence such as the NVIDIA
    install hint), and a word still too long (a path) into line-long chunks; anything else is whole."""
    room = max(1, room)
    if len(unit) <= room:
        return [unit]
    return [word[i : i + room] for word in unit.split(" ") for i in range(0, len(word), room)] or [""]


def _ago(minutes: float) -> str:
    """An x-axis label of the load chart: how long before the newest sample."""
    if abs(minutes) < 1 / 60:
        return "now"
    return f"{minutes:.0f} min" if abs(minutes) >= 1 else f"{minutes * 60:.0f} s"
