"""Memory & load: accelerator memory from the train run's metrics, and RAM, swap, CPU, load and
free disk from psutil, each with a sparkline of the last minutes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from w4tui.ui.sources import fmt
from w4tui.ui.sources.system import SystemHistory, SystemSample
from w4tui.ui.widgets.chart import LineChart
from w4tui.ui.widgets.pane import Pane
from w4tui.ui.widgets.status import resolve, set_text

SAMPLE_S = 4.0
LABEL = 11
VALUE = 24


class MemoryPane(Pane, can_focus=True):
    PANE_ID, TITLE, KEY = "memory", "Memory & load", "2"
    SHORT = "Memory"
    DEFAULT_CSS = """
    MemoryPane #memory-body { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    MemoryPane #load-chart { margin-top: 1; min-height: 5; }
    """

    def __init__(self, sampler=None) -> None:
        super().__init__()
        self.sampler = sampler  # a SystemSampler, made on first use in a worker when None
        self.history = SystemHistory()
        self.device: str | None = None
        self.accelerator: dict[str, int] = {}
        self.accelerator_history: list[float] = []
        self._backfilled = False

    def compose(self) -> ComposeResult:
        yield Static(id="memory-body")
        yield LineChart(empty="", y_range=(0, 100), id="load-chart", x_format=_ago, y_format=lambda y: f"{y:.0f}%")

    def on_mount(self) -> None:
        # After the first frame (it imports psutil), then every SAMPLE_S.
        self.call_after_refresh(lambda: self.run_loop("memory", self._sample, SAMPLE_S))
        self.on_resize()

    def on_resize(self, _=None) -> None:
        if self.ready and self.display:  # a hidden pane is drawn when it is shown
            set_text(self.query_one("#memory-body", Static), self._body())

    def restyle(self) -> None:
        self.on_resize()

    def on_show(self) -> None:
        self.on_resize()
        self._chart()

    def show_accelerator(self, device: str | None, memory: dict[str, int], history: list[float]) -> None:
        self.device, self.accelerator, self.accelerator_history = device, memory, history
        self.on_resize()

    def _sample(self) -> None:  # in the "memory" loop's thread
        if self.sampler is None:
            from w4tui.ui.sources.system import SystemSampler

            self.sampler = SystemSampler(self.app.config.paths.outputs)
        if not self._backfilled:
            self._backfilled = True
            self.deliver("backfill", self.sampler.backfill())
        self.deliver("system", self.sampler.sample())

    def show_backfill(self, samples: list[SystemSample]) -> None:
        for sample in samples:
            self.history.add(sample)
        self.on_resize()
        self._chart()

    def show_system(self, sample: SystemSample) -> None:
        latest = self.history.latest
        if latest is not None and sample.time <= latest.time:
            return  # nothing new (a sampler that could not measure again)
        self.history.add(sample)
        self.on_resize()
        self._chart()

    def _chart(self) -> None:
        """CPU and RAM, in percent, over the kept history (minutes before the newest sample)."""
        h, latest = self.history, self.history.latest
        if latest is None or not self.display:
            return
        times = [(t - latest.time) / 60 for t in h.times]
        ram = [(x, used / latest.ram_total * 100) for x, used in zip(times, h.ram)] if latest.ram_total else []
        self.query_one(LineChart).update([list(zip(times, h.cpu)), ram], len(h.times) and id(latest))
        self.set_subtitle("CPU % ━  RAM % ━")

    # -- drawing ---------------------------------------------------------------------------
    def _body(self) -> Text:
        width = max(30, self.size.width - 2)
        bar_w = max(6, min(16, width - LABEL - VALUE))
        spark_w = width - LABEL - bar_w - VALUE - 1
        app = self.app
        self._muted, self._bar, self._spark = (
            resolve("$text-muted", app),
            resolve("$primary", app),
            resolve("$accent", app),
        )
        text = Text(no_wrap=True, overflow="crop")
        self._accelerator(text, bar_w, spark_w, width)
        s = self.history.latest
        if s is None:
            text.append("system      sampling…", self._muted)
            return text
        self._row(
            text,
            "RAM",
            s.ram_used / s.ram_total if s.ram_total else 0,
            bar_w,
            f"{fmt.size(s.ram_used)} / {fmt.size(s.ram_total)}",
            list(self.history.ram),
            spark_w,
            width,
            high=s.ram_total,
        )
        self._row(
            text,
            "swap",
            s.swap_used / s.swap_total if s.swap_total else 0,
            bar_w,
            f"{fmt.size(s.swap_used)} / {fmt.size(s.swap_total)}",
            list(self.history.swap),
            spark_w,
            width,
            high=s.swap_total or None,
        )
        self._row(
            text,
            f"CPU {s.cpu_total:3.0f}%",
            s.cpu_total / 100,
            bar_w,
            f"{len(s.cpu)} cores",
            list(self.history.cpu),
            spark_w,
            width,
            high=100,
        )
        text.append(f"{'per core':<{LABEL}}", self._muted)
        text.append("".join(fmt.SPARK[min(7, int(c / 100 * 8))] for c in s.cpu[: width - LABEL]), self._bar)
        text.append("\n")
        text.append(f"{'load':<{LABEL}}", self._muted)
        text.append(f"{s.load[0]:.2f} {s.load[1]:.2f} {s.load[2]:.2f}", "bold")
        text.append(" (1, 5, 15 min)\n", self._muted)
        text.append(f"{'disk free':<{LABEL}}", self._muted)
        if s.disk_free is not None:
            text.append(f"{fmt.size(s.disk_free)}", "bold")
            text.append(f" of {fmt.size(s.disk_total)} on {s.disk_path}", self._muted)
        else:
            text.append("unknown", self._muted)
        return text

    def _accelerator(self, text: Text, bar_w: int, spark_w: int, width: int) -> None:
        mem, device = self.accelerator, self.device
        if not mem:
            text.append(f"{'accel':<{LABEL}}", self._muted)
            text.append(
                "training on the CPU: no accelerator memory\n"
                if device == "cpu"
                else "no figures yet (MPS / CUDA memory comes with the train run's metrics)\n",
                self._muted,
            )
            return
        limit = mem.get("mem_recommended_max") or mem.get("mem_total")
        used = mem.get("mem_allocated", 0)
        label = f"{(device or 'accel')} alloc"
        self._row(
            text,
            label,
            used / limit if limit else 0,
            bar_w,
            f"{fmt.size(used)} / {fmt.size(limit)}" if limit else fmt.size(used),
            self.accelerator_history,
            spark_w,
            width,
            high=limit or None,
        )
        for key, name in (("mem_driver", "driver"), ("mem_reserved", "reserved")):
            if key in mem:
                self._row(
                    text,
                    f"{device or ''} {name}".strip(),
                    mem[key] / limit if limit else 0,
                    bar_w,
                    fmt.size(mem[key]) + (" (max " + fmt.size(limit) + ")" if limit else ""),
                    [],
                    0,
                    width,
                )

    def _row(
        self,
        text: Text,
        label: str,
        fraction: float,
        bar_w: int,
        value: str,
        history: list[float],
        spark_w: int,
        width: int,
        high: float | None = None,
    ) -> None:
        text.append(f"{label[: LABEL - 1]:<{LABEL}}", self._muted)
        text.append(fmt.bar(fraction, bar_w), self._bar)
        text.append(f" {value:<{VALUE - 1}}", "bold")
        if history and spark_w >= 8:  # narrower: the chart below has the history
            text.append(fmt.sparkline(history, spark_w, low=0, high=high), self._spark)
        text.append("\n")


def _ago(minutes: float) -> str:
    """An x-axis label of the load chart: how long before the newest sample."""
    if abs(minutes) < 1 / 60:
        return "now"
    return f"{minutes:.0f} min" if abs(minutes) >= 1 else f"{minutes * 60:.0f} s"
