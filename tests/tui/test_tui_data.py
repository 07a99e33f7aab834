"""Unit tests for the TUI's plain parts: training state, runs polling, themes, charts, formats, log tail,
the stage form's arguments, and the mailbox that collapses bursts of worker results."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass

import pytest
import tui_workspace as ws
from textual import on
from textual.app import App
from tui_helpers import anyio_backend, recorded, utc  # noqa: F401

from core.events import read_events
from w4tui.runs.runner import Runner
from w4tui.ui.panes.logs import read_from
from w4tui.ui.screens.launch import prepare
from w4tui.ui.screens.stage_form import split_args
from w4tui.ui.sources import fmt
from w4tui.ui.sources.runs import RunsWatcher
from w4tui.ui.sources.training import TrainingState
from w4tui.ui.themes import ThemeFileError, builtin_dir, load_themes, parse_theme
from w4tui.ui.widgets.chart import plot
from w4tui.ui.widgets.pane import Delivered, Pane

TRAIN = "20251126-180000-train-b002"


def test_training_state_is_the_same_whether_folded_at_once_or_as_it_arrives(recorded):
    events = read_events(recorded.paths.runs / TRAIN / "events.jsonl")
    whole, pieces = TrainingState(), TrainingState()
    whole.apply(events)
    for i in range(0, len(events), 7):
        pieces.apply(events[i : i + 7])
    assert whole.losses == pieces.losses and whole.memory == pieces.memory and whole.step == pieces.step == 50
    assert whole.final == "succeeded" and whole.adapter.endswith(f"adapters/{ws.BUILD}")
    assert [s for s, _ in whole.eval_losses] == [10, 20, 30, 40, 50]
    assert whole.memory["mem_recommended_max"] == int(21.3e9) and len(whole.memory_history) == 50


def test_eta_counts_down_between_reports_and_an_error_is_kept():
    s = TrainingState()
    s.apply([{"kind": "metrics", "time": 100.0, "step": 5, "total_steps": 10, "eta_s": 50.0, "loss": 1.0}])
    assert s.eta_now(110.0) == 40.0 and s.eta_now(500.0) == 0.0 and s.fraction == 0.5
    s.apply([{"kind": "error", "time": 120.0, "message": "out of memory", "hint": "lower batch_size"}])
    assert (s.final, s.error, s.hint, s.phase) == ("failed", "out of memory", "lower batch_size", "failed")
    assert s.eta_now(130.0) is None


def test_runs_watcher_reports_changes_only_and_sees_half_created_runs(recorded):
    watcher = RunsWatcher(Runner(recorded))
    runs, changed = watcher.poll()
    assert changed and [r.stage for r in runs][:2] == ["convert", "merge"]
    assert watcher.poll()[1] is False
    d = recorded.paths.runs / "20991231-000000-train-zz99"
    d.mkdir()  # the runner makes the directory before run.json
    assert watcher.poll()[1] is False
    record = json.loads((recorded.paths.runs / TRAIN / "run.json").read_text())
    record.update(id=d.name, created=time.time(), started=time.time(), status="failed")
    (d / "run.json").write_text(json.dumps(record))
    runs, changed = watcher.poll()
    assert changed and runs[0].id == d.name and runs[0].status == "failed"
    shutil.rmtree(d)
    runs, changed = watcher.poll()
    assert changed and d.name not in [r.id for r in runs]


def test_formats():
    assert fmt.sparkline([0, 50, 100], 3, low=0, high=100) == "▁▅█"
    assert fmt.sparkline([1, 2, 3, 4], 2) == "▁█"
    assert fmt.bar(0.5, 4) == "██  " and fmt.bar(2.0, 3) == "███"
    assert fmt.number(0.00012345) == "0.0001234" and fmt.number(1.5) == "1.5"


def test_chart_draws_a_rising_line_corner_to_corner():
    bits, owner, (x0, x1, y0, y1) = plot([[(0, 0.0), (10, 1.0)]], 5, 2)
    assert (x0, x1, y0, y1) == (0, 10, 0.0, 1.0)
    assert bits[1][0] & 0x40 and bits[0][4] & 0x08  # bottom-left dot and top-right dot
    assert all(any(row[c] for row in bits) for c in range(5))  # connected: every column has a dot
    assert {o for row in owner for o in row} == {-1, 0}
    _, owner, _ = plot([[(0, 0.0), (10, 1.0)], [(0, 1.0), (10, 0.0)]], 5, 2)
    assert 1 in {o for row in owner for o in row}  # the second series (eval) is drawn over the first


def test_builtin_themes_and_broken_theme_files(tmp_path):
    themes, problems = load_themes(builtin_dir())
    assert problems == [] and {t.name: t.dark for t in themes} == {"w4tui-dark": True, "w4tui-light": False}
    cases = {
        "toml.toml": ("name = [", "not valid TOML"),
        "unknown.toml": ('name = "x"\nprimary = "#fff"\nprimery = "#000"', "unknown key 'primery'"),
        "colour.toml": ('name = "x"\nprimary = "#ggg"', "'primary' = '#ggg' is not a colour"),
        "noprimary.toml": ('name = "x"', "'primary' is missing"),
        "name.toml": ('name = "Bad Name"\nprimary = "#fff"', "'name' must be lowercase"),
    }
    for file, (text, message) in cases.items():
        (tmp_path / file).write_text(text)
        with pytest.raises(ThemeFileError, match=message.replace("[", r"\[")):
            parse_theme(tmp_path / file)
    themes, problems = load_themes(builtin_dir(), tmp_path)
    assert len(problems) == len(cases) and all(str(tmp_path) in p for p in problems) and len(themes) == 2


def test_log_tail_keeps_a_partial_line_and_restarts_after_truncation(tmp_path):
    log = tmp_path / "output.log"
    log.write_bytes(b"one\nprogress 10%\rprogress 50%\ntwo wi")
    text, offset = read_from(log, None)
    assert text == "one\nprogress 50%\n" and offset == len(b"one\nprogress 10%\rprogress 50%\n")
    with open(log, "ab") as fh:
        fh.write(b"thout newline\n")
    text, offset2 = read_from(log, offset)
    assert text == "two without newline\n"
    log.write_bytes(b"new\n")
    assert read_from(log, offset2) == ("new\n", 4)


def test_form_arguments_and_prefill(recorded):
    assert split_args(["--a", "1", "--promote", "--b", "2"]) == [("--a", "1"), ("--promote", None), ("--b", "2")]
    runner = Runner(recorded)
    merge = prepare(runner, recorded, "merge", None, ws.NOW)
    assert merge.args[:2] == ["--adapter", str(recorded.paths.outputs / "adapters" / ws.BUILD)] and merge.blank is None
    quantize = prepare(runner, recorded, "quantize", None, ws.NOW)
    assert quantize.blank == "--input" and "no gguf to quantize yet" in quantize.note
    assert "--type" in quantize.args and quantize.args[quantize.args.index("--type") + 1] == "Q4_K_M"
    assert prepare(runner, recorded, "pipeline", None, ws.NOW).args == ["--from", "download", "--to", "verify"]


class _Probe(Pane):
    PANE_ID = "probe"

    @dataclass
    class Value(Delivered):
        """A number from the worker."""

        value: int

    @dataclass
    class Other(Delivered):
        """Another kind of result."""

        value: int

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[int] = []

    @on(Value)
    def show_value(self, message: Value) -> None:
        self.shown.append(message.value)


@pytest.mark.anyio
async def test_a_burst_of_worker_results_collapses_into_few_updates_and_the_newest_wins():
    class Host(App):
        def compose(self):
            yield _Probe()

    app = Host()
    async with app.run_test() as pilot:
        probe = app.query_one(_Probe)

        def burst() -> None:
            for i in range(500):
                probe.deliver(probe.Value(i))

        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()
        await pilot.pause(0.2)
        assert probe.shown[-1] == 499 and len(probe.shown) < 50
        one, two, other = probe.Value(1), probe.Value(2), probe.Other(3)
        for message in (one, two, other):
            message.owner = probe
        assert two.can_replace(one) and not other.can_replace(two)
        elsewhere = probe.Value(4)  # the same kind of result for another widget does not replace it
        elsewhere.owner = object()
        assert not elsewhere.can_replace(one)


@pytest.mark.anyio
async def test_a_failing_pane_loop_tells_the_user_once_and_again_when_it_recovers():
    rounds = []

    class Host(App):
        def compose(self):
            yield _Probe()

        def on_mount(self) -> None:
            def work() -> None:
                rounds.append(1)
                if len(rounds) <= 3:
                    raise OSError("disk went away")

            self.query_one(_Probe).run_loop("scan", work, 0.05, shared=False)

    app = Host()
    async with app.run_test() as pilot:
        for _ in range(100):
            if len(rounds) > 4:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        said = [n.message for n in app._notifications]
        assert said == ["scan failed: OSError: disk went away (retrying; details in the log)", "scan works again"]
