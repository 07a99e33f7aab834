"""The Memory & load pane with a scripted machine: the Mac's figures (GPU, pressure, power, thermal,
Ollama's loaded model) whole at 80x24 and 120x36, what Linux cannot measure said in its row, GB of
10^9 bytes, and snapshots at both sizes."""

from __future__ import annotations

import sys

import pytest
import tui_workspace
from machine_script import ScriptedMachine, mac_sample
from textual.app import App
from tui_helpers import anyio_backend, recorded, settle, until, utc  # noqa: F401

from core.units import gb
from w4tui.monitors.sampler import MachineSampler
from w4tui.ui.panes.memory import MemoryPane
from w4tui.ui.sources.system import machine_rows

SIZES = [(80, 24), (120, 36)]
# The pane's outer size on the main screen at each terminal size: alone under the pane bar at 80x24; in the
# third column of the top grid row at 120x36 (measured on the main screen: 40x18). The pane is hosted alone so these tests
# depend on no other pane.
PANE_SIZE = {(80, 24): (80, 22), (120, 36): (40, 18)}


class Host(App):
    def __init__(self, config, machine, pane_size) -> None:
        super().__init__()
        self.config, self.clock, self.pane_size = config, (lambda: tui_workspace.NOW), pane_size
        sampler = tui_workspace.FixedSampler()
        self.pane = MemoryPane(sampler, machine)

    def compose(self):
        yield self.pane

    def on_mount(self) -> None:
        self.pane.styles.width, self.pane.styles.height = self.pane_size


def make(config, machine, size=(80, 24)):
    return Host(config, machine, PANE_SIZE[size])


async def shown(pilot):
    pane = pilot.app.pane
    pane.show_accelerator(
        "mps",
        {"mem_allocated": 8_400_000_000, "mem_driver": 9_900_000_000, "mem_recommended_max": 21_000_000_000},
        [7e9, 8e9, 8.4e9],
    )
    await until(
        pilot,
        lambda: pane.ready and pane.machine is not None and pane.history.latest is not None,
        what="the memory pane's figures",
    )
    await settle(pilot, rounds=3)
    return pane


def body(pane) -> list[str]:
    return pane._body().plain.splitlines()


MAC_FIGURES = [
    "GPU",
    "2%",
    "341 MB in use",
    "alloc 1.2 GB",
    "pressure",
    "warn",
    "battery",
    "89%",
    "4h47 left",
    "no warning recorded",
    "qwen2.5-coder:7b-instruct-q4_K_M",
    "6.0 GB",
    "until 21:05",
    "RAM",
    "/ 34.4 GB",
    "2.50 2.10 1.90",
    "(1/5/15 min)",
    "129.3 GB free",
    "of 530.9 GB",
    "on /Users/me/w4",
]


@pytest.mark.anyio
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x36"])
async def test_every_figure_whole(recorded, size):
    app = make(recorded, ScriptedMachine(mac_sample(tui_workspace.NOW)), size)
    async with app.run_test(size=size) as pilot:
        pane = await shown(pilot)
        lines = body(pane)
        width = pane.size.width
        assert max(len(line) for line in lines) <= width, lines
        text = "\n".join(lines)
        for figure in MAC_FIGURES:
            assert figure in text, (figure, lines)
        assert "8.4 GB / 21.0 GB" in text and "9.9 GB" in text  # 21e9 bytes is 21.0 GB, not "19.6 GB"
        # No row is cut at the bottom either: the chart gives way first.
        chart = pane.query_one("LineChart")
        assert len(lines) + (6 if chart.display else 0) <= pane.size.height


@pytest.mark.anyio
async def test_linux_says_what_it_cannot(recorded, monkeypatch):
    from core.ollama.client import OllamaError

    monkeypatch.setitem(sys.modules, "pynvml", None)

    def ollama():
        raise OllamaError("Ollama is not reachable at http://127.0.0.1:9")

    app = make(recorded, MachineSampler(system="Linux", ollama=ollama, clock=lambda: tui_workspace.NOW))
    async with app.run_test(size=(80, 24)) as pilot:
        text = "\n".join(body(await shown(pilot)))
    assert "no NVIDIA monitoring (pip install 'w4tui[nvidia]')" in text
    assert "memory pressure, power, thermal state: macOS only" in text
    assert "Ollama is not reachable at http://127.0.0.1:9" in text


def test_gb_means_ten_to_the_ninth():
    assert gb(21e9) == "21.0 GB" and gb(19.6 * 2**30) == "21.0 GB" and gb(340983808) == "341 MB"
    rows = machine_rows(mac_sample(tui_workspace.NOW), [2.0], tui_workspace.NOW)
    labels = [label for label, _, _ in rows]
    assert labels == ["GPU", "pressure", "power", "thermal", "Ollama"]
    assert rows[1][1] == [("warn", "warn")]


def test_critical_pressure_and_throttling_stand_out():
    from dataclasses import replace

    from w4tui.monitors.macos import Thermal

    sample = replace(mac_sample(0), pressure="critical", thermal=Thermal(speed_limit=28, scheduler_limit=40))
    rows = {label: units for label, units, _ in machine_rows(sample, [], 0)}
    assert rows["pressure"] == [("critical", "bad")]
    assert rows["thermal"] == [("throttled", "bad"), ("CPU speed 28%", "bad")]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x36"])
def test_memory_pane_snapshot(snap_compare, recorded, size):
    async def run_before(pilot):
        await shown(pilot)

    assert snap_compare(
        make(recorded, ScriptedMachine(mac_sample(tui_workspace.NOW)), size), terminal_size=size, run_before=run_before
    )


@pytest.mark.anyio
async def test_a_run_that_ends_rings_the_bell_and_shows_a_toast(recorded):
    from tui_helpers import fake_command, make_app, notifications

    from w4tui.runs.runner import Runner

    app = make_app(recorded)
    bells = []
    app.bell = lambda: bells.append(1)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: bool(app.screen.runs), what="the runs")
        before = len(notifications(app))
        run = Runner(recorded).start_command(
            "convert", fake_command(50, 0.1)
        )  # 5 s: seen live by 1 s polls under load too
        await until(pilot, lambda: any(r.id == run.id and r.live for r in app.screen.runs), what="the run live")
        await until(pilot, lambda: any(run.id in n for n in notifications(app)), timeout=20, what="the toast")
        await settle(pilot)
    toasts = [n for n in notifications(app)[before:] if run.id in n]
    assert toasts == [f"convert succeeded ({run.id})"] and bells == [1]


@pytest.mark.anyio
async def test_the_live_trainings_machine_warnings_are_shown(recorded, tmp_path):
    from types import SimpleNamespace

    from core.events import EventWriter

    events = tmp_path / "events.jsonl"
    writer = EventWriter("train", events, "run-t")
    writer.metrics(step=1, loss=2.0)
    app = make(recorded, ScriptedMachine(mac_sample(tui_workspace.NOW)), (120, 36))
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await shown(pilot)
        pane.show_runs((SimpleNamespace(id="run-t", stage="train", live=True, events_path=events),))
        writer.log(
            "memory pressure is critical: macOS may kill the training; quit other apps",
            level="warning",
            source="monitor",
        )
        writer.log("an ordinary line", level="warning")  # not a machine warning
        pane.poke("machine")
        await until(pilot, lambda: pane.warnings, what="the warning")
        await settle(pilot)
        words = " ".join(" ".join(body(pane)).split())  # the message wraps at 120x36, word by word
        assert (
            "warning " in words and "memory pressure is critical: macOS may kill the training; quit other apps" in words
        )
        assert "ordinary" not in words
        assert any("memory pressure is critical" in n.message for n in app._notifications)
        assert max(len(line) for line in pane._body().plain.splitlines()) <= pane.size.width
        pane.show_runs(())  # the training ended: its warnings go with it
        assert pane._watched is None
    writer.close()


@pytest.mark.anyio
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x36"])
async def test_every_figure_whole_on_the_main_screen(recorded, size):
    from tui_helpers import make_app

    app = make_app(recorded)  # its fixed sampler carries the scripted Mac
    async with app.run_test(size=size) as pilot:
        if size[0] < 120:
            await pilot.press("2")
        pane = app.screen.pane("memory")
        await until(
            pilot,
            lambda: pane.display and pane.machine is not None and pane.accelerator and pane.history.latest is not None,
            what="the memory pane's figures",
        )
        await settle(pilot, rounds=3)
        assert tuple(pane.outer_size) == PANE_SIZE[size]  # what the isolated tests above assume
        lines = body(pane)
        assert max(len(line) for line in lines) <= pane.size.width and len(lines) <= pane.size.height
        text = "\n".join(lines)
        assert all(figure in text for figure in MAC_FIGURES), lines
        assert "10.5 GB / 21.3 GB" in text  # the recorded training's MPS figures, in GB of 10^9


def test_a_sentence_too_long_for_a_narrow_pane_wraps_between_words():
    # At 120x36 the pane is 38 columns: the NVIDIA hint wrapped as "…(pip install 'w" / "4tui[nvidia]')".
    from rich.text import Text

    from w4tui.ui.panes.memory import MemoryPane

    pane = MemoryPane()
    pane._width, pane._muted, pane._styles = 36, "", {"muted": "", "value": ""}
    hint = "no NVIDIA monitoring (pip install 'w4tui[nvidia]')"
    text = Text()
    pane._row(text, "", [(hint, "muted")])
    lines = text.plain.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 36 and len(lines) == 2, lines
    assert " ".join(line.strip() for line in lines) == hint
    assert all(word in hint.split() for line in lines for word in line.split())  # no word cut in two
    path = "/Users/me/" + "x" * 60  # one word longer than a line is still cut into line-long pieces
    text = Text()
    pane._row(text, "disk", [(path, "value")])
    assert "".join(line.strip() for line in text.plain.splitlines()[1:]) == path


def test_a_cpu_training_row_reads_as_a_sentence():
    # "training accelerator memory the training runs on the CPU" read as one run-on phrase.
    from w4tui.ui.sources.system import accelerator_rows

    ((label, units, _),) = accelerator_rows("cpu", {}, [])
    assert label == "training" and " ".join(u for u, _ in units) == "accelerator memory: the training runs on the CPU"


def test_an_mlx_training_shows_its_memory_its_peak_and_metals_working_set():
    # The keys the mlx backend's metrics events carry (stages/train/mlx_backend/memory.py).
    from w4tui.ui.sources.system import accelerator_rows

    mem = {"mem_allocated": 6_200_000_000, "mem_peak": 9_100_000_000, "mem_recommended_max": 22_906_492_245}
    rows = accelerator_rows("mlx-gpu", mem, [6.2e9])
    (label, units, gauge), (_, peak, _) = rows
    assert label == "training" and [u for u, _ in units] == ["mlx-gpu alloc", "6.2 GB / 22.9 GB"]
    assert gauge[0] == pytest.approx(6.2e9 / 22_906_492_245)
    assert [u for u, _ in peak] == ["mlx-gpu peak", "9.1 GB"]
