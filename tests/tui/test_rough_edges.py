"""Pilot tests for the rough edges a new user hit (issue 13): a run's end shown at once, incomplete
adapters, logs of a run that just ended, the stage form's checkbox, dialogs, zoom."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import tui_workspace as ws
from textual.widgets import Checkbox, DataTable, Input, Static
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, text_of, until, utc  # noqa: F401

from w4tui.ui.screens.stage_form import StageFormScreen
from w4tui.ui.widgets.dialogs import ConfirmScreen, TextInputScreen

pytestmark = pytest.mark.anyio


def head(app) -> str:
    return text_of(app.screen.query_one("#training-head", Static))


@pytest.mark.parametrize("end", ["succeeded", "cancelled", "failed"])
async def test_training_head_shows_the_end_of_the_run_it_followed_at_once(recorded, end):
    """Item 3: the head said "▶ running" (or "■ cancelling") after the end, until another run started."""
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        pane = app.screen.query_one("#training")
        finished = pane.run
        live = "cancelling" if end == "cancelled" else "running"
        pane.follow(dataclasses.replace(finished, status=live, ended=None))
        await settle(pilot)
        assert live in head(app)
        # Every event was read while it was live: its end comes with no new event to read.
        pane.follow(dataclasses.replace(finished, status=end))
        await settle(pilot)
        assert end in head(app) and live not in head(app)


async def test_a_failed_trainings_hint_shows_whole_at_80_columns(recorded):
    """Item 7: the hint (what to do) was cut off, even at 200x55."""
    run_dir = recorded.paths.runs / "20251126-180000-train-b002"
    hint = "add --resume to continue it, or choose another --output (the adapter directory is not empty)"
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write(
            json.dumps(
                {
                    "v": 1,
                    "time": ws.NOW,
                    "run": run_dir.name,
                    "stage": "train",
                    "kind": "error",
                    "message": f"{recorded.paths.outputs}/adapters/{ws.BUILD}: already holds a training run",
                    "hint": hint,
                }
            )
            + "\n"
        )
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        error = app.screen.query_one("#training-error", Static)
        await until(pilot, lambda: "hint" in text_of(error), what="the error under the head")
        assert hint in text_of(error) and error.size.width <= 76
        assert error.size.height >= 3  # wrapped onto lines of its own, not cut at the pane's edge


def _incomplete_adapter(config) -> str:
    """A cancelled training: its adapter directory holds a checkpoint only, newer than everything else."""
    path = config.paths.outputs / "adapters" / "20251126-2055"
    ckpt = path / "checkpoints" / "step-0000003"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"\3" * 3000)
    (ckpt / "optimizer.pt").write_bytes(b"\4" * 2000)
    later = ws.NOW - 60
    for p in (ckpt / "adapter_model.safetensors", ckpt / "optimizer.pt", ckpt, path / "checkpoints", path):
        os.utime(p, (later, later))
    return str(path)


async def test_an_incomplete_adapter_is_shown_as_such_with_its_real_size(recorded):
    """Item 6: it was the newest adapter with a ★ and "0 B", and deleting it said "0 B on disk"."""
    path = _incomplete_adapter(recorded)
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        pane = app.screen.query_one("#artifacts")
        await until(pilot, lambda: any(a.path == path for a in pane.artifacts), what="the incomplete adapter")
        adapters = {a.path: a for a in pane.artifacts if a.kind == "adapter"}
        partial, complete = adapters[path], adapters[str(recorded.paths.outputs / "adapters" / ws.BUILD)]
        assert partial.incomplete and not partial.latest and partial.bytes == 5000
        assert complete.latest and not complete.incomplete
        table = pane.query_one(DataTable)
        assert "◐" in str(table.get_cell(path, "note")) and "★" not in str(table.get_cell(path, "note"))
        table.move_cursor(row=[a.path for a in pane.artifacts].index(path))
        await settle(pilot)
        assert "incomplete" in text_of(pane.query_one("#artifact-detail", Static))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete question")
        question = " ".join(text_of(w) for w in app.screen.query("Label, Static"))
        assert (
            "incomplete adapter" in question and "5.0 KB on disk" in question and "1 checkpoint" in question
        )  # 5000 bytes: GB = 10^9
        await pilot.press("n")


async def test_the_last_artifact_row_stays_visible_and_names_are_cut_with_an_ellipsis(recorded):
    """Item 9: the selected last row hid behind the detail lines; names were cut bare (`…-Q4_K_M.g`)."""
    adapter = recorded.paths.outputs / "adapters" / ws.BUILD / "checkpoints"
    for step in range(1, 16):
        (adapter / f"step-{step:07d}").mkdir(exist_ok=True)
    long = recorded.paths.outputs / "gguf" / "20251126-180000-a-very-long-build-name-Q4_K_M.gguf"
    long.write_bytes((recorded.paths.outputs / "gguf" / f"{ws.OLD}-f16.gguf").read_bytes())
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        pane = app.screen.query_one("#artifacts")
        table = pane.query_one(DataTable)
        await until(pilot, lambda: table.row_count > 18, what="the artifacts")
        for _ in range(table.row_count - 1):  # as a user goes down to the last row, one key at a time
            await pilot.press("down")
            await settle(pilot, rounds=1)
            row = table.cursor_row
            shown = ["".join(s.text for s in table.render_line(y)) for y in range(table.size.height)]
            cells = [str(c) for c in table.get_row_at(row)]
            assert any(cells[0] in line and cells[1] in line for line in shown), (row, cells, shown)
        assert table.cursor_row == table.row_count - 1
        name = str(table.get_cell(str(long), "name"))
        assert "…" in name and name.startswith("20251126") and name.endswith("Q4_K_M")


async def test_the_logs_pane_shows_the_end_of_a_run_that_just_finished(recorded, tmp_path):
    """Item 8: blank while "following" a run that had just ended; pressing f twice showed it."""
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("6")
        pane = app.screen.query_one("#logs")
        await until(pilot, lambda: bool(pane.lines), what="a log")
        runs = pane.runs
        base = runs[0]
        run_dir = tmp_path / "run-x"
        run_dir.mkdir()
        (run_dir / "output.log").write_text("")
        live = dataclasses.replace(
            base, id="20251126-210000-merge-ffff", status="running", ended=None, dir=run_dir, started=ws.NOW
        )
        pane.show_runs((live, *runs))  # it starts: the pane follows it and reads its (empty) log
        await until(
            pilot, lambda: pane.run is not None and pane.run.id == live.id and pane._offset == 0, what="the first read"
        )
        (run_dir / "output.log").write_text("merging\nmerged 24 tensors\n")  # written, then it ends
        pane.show_runs((dataclasses.replace(live, status="succeeded", ended=ws.NOW + 5), *runs))
        await until(pilot, lambda: "merged 24 tensors" in text_of(pane.query_one("#log-tail")), what="its last lines")


async def test_the_verify_forms_checkbox_draws_whole(recorded):
    """Item 9: `--promote` drew as `▐X…`."""
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("5", *["down"] * 6, "s")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the verify form")
        await settle(pilot)
        box = app.screen.query_one(Checkbox)
        assert box.value and box.size.width >= len("▐X▌ on")
        rendered = "".join(segment.text for segment in box.render_line(0))
        assert "…" not in rendered and "on" in rendered
        await pilot.press("escape")


async def test_copy_prefills_the_model_with_the_cursor_after_it(recorded):
    """Item 9: the prefilled `web4-agent:` was selected, so typing `keep` made `keep:latest`."""
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.push_screen(TextInputScreen("Copy web4-agent:build-1 to", "web4-agent:"))
        await until(pilot, lambda: isinstance(app.screen, TextInputScreen), what="the dialog")
        await settle(pilot)
        await pilot.press("k", "e", "e", "p")
        assert app.screen.query_one(Input).value == "web4-agent:keep"


async def test_rollback_without_a_previous_build_says_so_without_asking(recorded, monkeypatch):
    """Item 9: rollback asked to confirm when there was no `previous` to go back to."""
    from ollama_standin import OllamaStandIn

    with OllamaStandIn() as server:
        server.add_model("web4-agent:build-20251126-1800")
        server.models["web4-agent:latest"] = dict(server.models["web4-agent:build-20251126-1800"])
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        app = make_app(recorded)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("4")
            pane = app.screen.query_one("#ollama")
            await until(pilot, lambda: pane.snapshot is not None and not pane.snapshot.error, what="the models")
            await pilot.press("b")
            await until(pilot, lambda: any("no web4-agent:previous" in n for n in notifications(app)), what="refusal")
            assert not isinstance(app.screen, ConfirmScreen)


async def test_zoom_and_the_palettes_maximize_show_a_whole_pane(recorded):
    """Item 9 and "a full-screen toggle for any pane": Maximize enlarged the logs' run list only."""
    app = make_app(recorded)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("6")
        assert isinstance(screen.focused, DataTable)
        screen.action_maximize()  # what the palette's "Maximize" calls, on the focused run list
        assert screen.maximized is screen.pane("logs")
        await pilot.press("3")  # a pane key while zoomed: that pane, zoomed
        await settle(pilot)
        assert screen.maximized is screen.pane("artifacts")
        assert screen.pane("artifacts").outer_size.width == 160
        await pilot.press("z")
        assert screen.maximized is None
        await pilot.press("1", "z")
        assert screen.maximized is screen.pane("training")


async def test_the_no_training_yet_hint_wraps_whole_at_80_columns(tmp_path, monkeypatch, utc):
    """A new workspace: the Training pane's hint was cut at 80 columns ("its progress…")."""
    from core.config import load_config

    (tmp_path / "config.toml").write_text('[paths]\nruns = "runs"\noutputs = "out"\nstate = "state"\n')
    app = make_app(load_config(tmp_path / "config.toml"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        head = app.screen.query_one("#training-head", Static)
        await until(pilot, lambda: "No training run yet" in text_of(head), what="the empty state")
        assert head.has_class("-empty") and head.size.height >= 3  # wrapped, not cut with an ellipsis
        assert "its progress shows here." in text_of(head)
