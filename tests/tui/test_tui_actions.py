"""Pilot tests for the actions: start through the form, cancel, pipeline, re-attach and follow,
artifact delete / deploy / verify / rescan. Stages are small stand-ins started through the real runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tui_workspace as ws
from textual.widgets import Input, Static
from tui_helpers import (  # noqa: F401
    ROOT,
    anyio_backend,
    fake_command,
    make_app,
    notifications,
    recorded,
    settle,
    start_fake,
    text_of,
    until,
    utc,
    wait_ended,
)

from w4tui.runs.runner import Runner
from w4tui.ui import app as app_module
from w4tui.ui.screens import launch
from w4tui.ui.screens.stage_form import StageFormScreen
from w4tui.ui.widgets.dialogs import ConfirmScreen

pytestmark = pytest.mark.anyio


def stages_row(app, name: str) -> str:
    table = app.screen.query_one("#stages-table")
    return str(table.get_cell(name, "status"))


@pytest.fixture
def fake_start(monkeypatch):
    """Stage launches from the form run tests/fake_stage.py instead, recording the form's arguments."""
    launched: list[tuple[str, list[str]]] = []

    def start(runner, config, stage, args):
        launched.append((stage, args))
        output = args[args.index("--output") + 1] if "--output" in args else None
        return runner.start_command(
            stage,
            fake_command(3, 0.05, *(["--output", output] if output else [])),
            output=str(Path(output).resolve()) if output else None,
        )

    monkeypatch.setattr(launch, "start", start)
    return launched


async def test_start_a_stage_from_the_form_with_edited_arguments(recorded, fake_start):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "down", "s")  # merge
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the form")
        form = app.screen
        fields = {flag: value for flag, value in form.fields}
        assert fields["--adapter"] == str(recorded.paths.outputs / "adapters" / ws.BUILD)  # newest adapter
        assert fields["--output"] == str(recorded.paths.outputs / "merged" / ws.BUILD)
        output = form.query_one("#f2", Input)
        output.value = str(recorded.paths.outputs / "merged" / "edited")
        form.query_one("#extra", Input).value = "--dtype float16"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: any("merge started: run" in n for n in notifications(app)), what="started")
        stage, args = fake_start[-1]
        assert stage == "merge" and args[args.index("--output") + 1].endswith("merged/edited")
        assert args[-2:] == ["--dtype", "float16"]
        await until(
            pilot,
            lambda: (
                "succeeded" in stages_row(app, "merge")
                and app.screen.query_one("#stages").last_run("merge").output.endswith("merged/edited")
            ),
            what="the merge run to succeed",
        )


async def test_form_escape_launches_nothing_and_an_empty_input_is_refused(recorded, fake_start):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "down", "down", "down", "s")  # quantize: convert never succeeded
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the form")
        form = app.screen
        assert "no gguf to quantize yet" in text_of(form.query_one("#problem", Static))
        assert form.query_one("#f0", Input).value == "" and form.fields[0][0] == "--input"
        await pilot.press("ctrl+s")
        assert app.screen is form and "--input needs a value" in text_of(form.query_one("#error", Static))
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, StageFormScreen) and fake_start == []


async def test_cancel_a_running_stage(recorded):
    run = start_fake(recorded, "download", 400, 0.05)
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await until(pilot, lambda: "running" in stages_row(app, "download"), what="download running")
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "cancelled" in stages_row(app, "download"), what="download cancelled")
        await pilot.press("c")  # nothing left to cancel
        assert "no download run is running" in notifications(app)
    assert Runner(recorded).get(run.id).status == "cancelled"


async def test_run_the_pipeline_as_one_detached_run(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5", "P")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the form")
        form = app.screen
        assert [f for f, _ in form.fields] == ["--from", "--to"]
        form.query_one("#f0", Input).value = "quantize"
        form.query_one("#f1", Input).value = "quantize"
        await pilot.press("ctrl+s")
        # convert failed in the recording, so there is no GGUF: the pipeline run fails, saying why
        await until(pilot, lambda: "failed" in stages_row(app, "pipeline"), what="the pipeline run to fail")
        pane = app.screen.query_one("#stages")
        pane.query_one("#stages-table").move_cursor(row=7)
        await until(
            pilot,
            lambda: "no gguf to quantize yet" in text_of(pane.query_one("#stage-detail", Static)),
            what="the pipeline's error in the detail",
        )


async def test_reattach_to_a_run_started_elsewhere_follow_it_and_quit_leaves_it_running(recorded):
    run = Runner(recorded).start_command(
        "train",
        [sys.executable, str(ROOT / "tests" / "support" / "fake_train.py"), "--steps", "400", "--rate", "20"],
        cancel_grace_s=5,
    )
    app = make_app(recorded, clock=__import__("time").time)
    try:
        async with app.run_test(size=(100, 34)) as pilot:
            training = app.screen.query_one("#training")
            await until(
                pilot,
                lambda: training.run is not None and training.run.id == run.id and training.state.step >= 5,
                what="the training pane to follow the live run",
            )
            first = training.state.step
            await until(pilot, lambda: training.state.step >= first + 10, what="more steps to arrive")
            assert training.state.device == "mps" and training.state.losses[-1][0] == training.state.step
            await pilot.press("6")
            logs = app.screen.query_one("#logs")
            await until(
                pilot,
                lambda: logs.run is not None and logs.run.id == run.id and any("step" in line for line in logs.lines),
                what="its output in Logs",
            )
            seen = logs.lines[-1]
            await until(pilot, lambda: logs.lines[-1] != seen, what="the log to grow (following)")
            assert logs.lines[-1] in text_of(app.screen.query_one("#log-tail"))
            await pilot.press("q")
        message = app_module.live_runs_message(Runner(recorded))
        assert run.id in message and "keeps running" in message
        # The hints name the config in use: pasted into a new shell they find the run (issue 13, item 5).
        assert f"{recorded.cli} logs -f {run.id}" in message and f"Run `{recorded.cli}` again to re-attach" in message
        assert "--config" in recorded.cli
        assert Runner(recorded).get(run.id).live
    finally:
        Runner(recorded).cancel(run.id)
        wait_ended(recorded, run.id)


async def test_artifact_delete_asks_first_and_refuses_while_a_run_writes_it(recorded):
    checkpoint = recorded.paths.outputs / "adapters" / ws.BUILD / "checkpoints" / "step-0000040"
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("down", "down", "down", "d")  # step-0000040
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen) and "step-0000040" in str(app.screen.question)
        await pilot.press("n")
        await settle(pilot)
        assert checkpoint.exists()
        await pilot.press("d")
        await pilot.press("y")
        await until(pilot, lambda: not checkpoint.exists(), what="the checkpoint to go")
        await settle(pilot)
        assert [a.name for a in app.screen.query_one("#artifacts").artifacts].count("step-0000040") == 0
        # a live run writing the merged model keeps it from being deleted
        merged = recorded.paths.outputs / "merged" / ws.BUILD
        run = start_fake(recorded, "merge", 400, 0.05, "--output", str(merged), output=str(merged))
        try:
            await until(pilot, lambda: any(r.live for r in app.screen.runs), what="the live run")
            pane = app.screen.query_one("#artifacts")
            pane.query_one("#artifacts-table").move_cursor(row=[a.path for a in pane.artifacts].index(str(merged)))
            await pilot.press("d")
            await settle(pilot)
            assert str(merged) in str(app.screen.detail)
            await pilot.press("y")
            await until(pilot, lambda: any("is writing to" in n for n in notifications(app)), what="the refusal")
            assert merged.exists()
        finally:
            Runner(recorded).cancel(run.id)
            wait_ended(recorded, run.id)


async def test_artifact_deploy_verify_and_rescan(recorded, fake_start):
    gguf = recorded.paths.outputs / "gguf" / f"{ws.OLD}-f16.gguf"
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        pane = app.screen.query_one("#artifacts")
        # The first scan may come before the runs (their events say what was deployed): wait for the lineage.
        await until(pilot, lambda: any(a.deployed for a in pane.artifacts), what="the artifacts with their lineage")
        await pilot.press("D")  # on the base model: not a GGUF
        assert any("deploy takes a GGUF file" in n for n in notifications(app))
        await pilot.press("v")
        assert any("not deployed to Ollama yet" in n for n in notifications(app))
        await pilot.press("ctrl+end", "D")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the deploy form")
        assert ("--gguf", str(gguf)) in app.screen.fields
        await pilot.press("escape")
        # (a key pressed while the form is still closing would be typed into it, as for a person)
        await until(pilot, lambda: not isinstance(app.screen, StageFormScreen), what="the form to close")
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the verify form")
        assert ("--model", f"web4-agent:build-{ws.OLD}") in app.screen.fields
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, StageFormScreen), what="the form to close")
        (recorded.paths.outputs / "gguf" / "new-f16.gguf").write_bytes(gguf.read_bytes())
        await pilot.press("r")
        await settle(pilot)
        assert "new-f16.gguf" in [a.name for a in pane.artifacts]
