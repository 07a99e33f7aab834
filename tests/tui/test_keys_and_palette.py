"""What users of comparable tools expect (issue 13): the palette finds "start train" by "train", a
mistyped keymap id is reported, `/` searches a log, one key resumes a stopped training."""

from __future__ import annotations

import pytest
from textual.command import CommandList, CommandPalette
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, text_of, until, utc  # noqa: F401

from w4tui.settings import save_setting

pytestmark = pytest.mark.anyio


async def test_the_palette_finds_start_train_when_searching_train(recorded, monkeypatch):
    started: list[str] = []
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        monkeypatch.setattr(screen, "launch", lambda stage, input_path=None: started.append(stage))
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*"train")
        commands = app.screen.query_one(CommandList)
        await until(pilot, lambda: commands.option_count > 0, what="matches")
        await settle(pilot)
        prompts = [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]
        assert any("Start train" in p for p in prompts[:3]), prompts
        index = next(i for i, p in enumerate(prompts) if "Start train" in p)
        for _ in range(index):
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: started == ["train"], what="the train form to be asked for")


async def test_a_mistyped_keymap_id_is_reported_and_the_right_ones_work(recorded):
    save_setting(recorded, "keymap", {"stages.strat": "g", "pane.stages": "f5"})
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        problems = [n for n in notifications(app) if "stages.strat" in n]
        assert problems and "did you mean 'stages.start'" in problems[0] and "settings.toml" in problems[0]
        await pilot.press("f5")
        assert app.screen.active == "stages"


async def test_slash_searches_the_log_and_n_goes_to_the_next_match(recorded):
    from textual.widgets import Input, Log

    from w4tui.ui.widgets.dialogs import TextInputScreen

    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("6")
        pane = app.screen.query_one("#logs")
        await until(pilot, lambda: bool(pane.runs), what="the runs")
        pane.select(next(r for r in pane.runs if r.stage == "train"))
        await until(pilot, lambda: len(pane.lines) == 50, what="the train log")  # "step i/50 loss x"
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, TextInputScreen), what="the search dialog")
        app.screen.query_one(Input).value = "STEP 1"  # (case-insensitive) step 1, 10-19
        await pilot.press("enter")
        log = pane.query_one(Log)

        async def shown() -> str:
            await settle(pilot, rounds=2)
            return log.lines[int(log.scroll_offset.y) + 2]  # the match is shown 2 lines from the top

        await until(pilot, lambda: not pane.following, what="the scrollable log")
        assert (await shown()).startswith("step 19/50") and "11/11" in pane.border_subtitle
        await pilot.press("n")  # past the last match: around to the first
        assert (await shown()).startswith("step 10/50") or log.scroll_offset.y == 0
        assert pane.lines[pane.match].startswith("step 1/50") and "1/11" in pane.border_subtitle
        await pilot.press("n")
        assert (await shown()).startswith("step 10/50")
        await pilot.press("N", "N")
        assert (await shown()).startswith("step 19/50")
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, TextInputScreen), what="the search dialog")
        app.screen.query_one(Input).value = "no such text"
        await pilot.press("enter")
        await until(pilot, lambda: any("not in the last 50 lines" in n for n in notifications(app)), what="not found")


async def test_r_resumes_a_cancelled_training_from_its_newest_checkpoint(recorded, monkeypatch):
    import json

    import tui_workspace as ws
    from textual.widgets import Static

    from w4tui.ui.screens import launch
    from w4tui.ui.screens.stage_form import StageFormScreen

    run_dir = recorded.paths.runs / "20251126-180000-train-b002"
    record = json.loads((run_dir / "run.json").read_text())
    adapter = str(recorded.paths.outputs / "adapters" / ws.BUILD)
    args = [
        "--base_model",
        str(recorded.model.dir),
        "--dataset",
        str(recorded.paths.data),
        "--output",
        adapter,
        "--epochs",
        "2",
    ]
    (run_dir / "run.json").write_text(
        json.dumps({**record, "status": "cancelled", "command": ["python", "-m", "stages.train_lora", *args]})
    )
    started: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(launch, "start", lambda runner, config, stage, a: started.append((stage, a)) or None)
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        pane = app.screen.query_one("#training")
        await until(pilot, lambda: pane.run is not None and pane.run.status == "cancelled", what="the cancelled run")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the resume form")
        form = app.screen
        assert "step-0000050" in text_of(form.query_one("#problem", Static))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(started), what="the launch")
    assert started == [("train", [*args, "--resume"])]


async def test_r_on_a_finished_training_says_there_is_nothing_to_resume(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await until(pilot, lambda: any("nothing to resume" in n for n in notifications(app)), what="the refusal")


async def test_the_train_form_shows_the_training_settings_and_previews_samples_tokens_and_steps(recorded):
    import json

    from textual.widgets import Input, Static

    from w4tui.ui.screens.stage_form import StageFormScreen

    data = recorded.paths.data
    data.mkdir(parents=True, exist_ok=True)
    record = {
        "messages": [
            {"role": "user", "content": "Create a PDCA for the build."},
            {"role": "assistant", "content": "## Plan\n- Measure the build time."},
        ]
    }
    (data / "web4.jsonl").write_text("\n".join(json.dumps(record) for _ in range(40)) + "\n{broken\n")
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "s")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the train form")
        form = app.screen
        fields = dict(form.fields)
        t = recorded.train
        assert fields["--epochs"] == f"{t.epochs:g}" and fields["--learning_rate"] == f"{t.learning_rate:g}"
        assert fields["--lora_r"] == str(t.lora_r) and fields["--max_seq_length"] == str(t.max_seq_length)
        preview = form.query_one("#preview", Static)
        await until(pilot, lambda: "samples" in text_of(preview), what="the dataset preview")
        text = text_of(preview)
        # 40 samples, 1 unreadable line; eval_fraction 0.1 -> 4 eval; batch 4, accumulation 1, 1 epoch
        assert "40 samples in 1 file (40 messages), 1 unreadable lines" in text
        assert "36 train / 4 eval → 9 steps per epoch × 1 epochs = 9 steps" in text
        assert "≈" in text and "tokens" in text and "longer than 64" in text
        epochs = next(i for i, (flag, _) in enumerate(form.fields) if flag == "--epochs")
        form.query_one(f"#f{epochs}", Input).value = "3"
        await settle(pilot)
        assert "= 27 steps" in text_of(preview)
        assert "--gradient_accumulation" in str(form.query_one("#extra", Input).placeholder)
        await pilot.press("escape")


@pytest.mark.anyio
async def test_the_train_forms_profile_keys_and_the_measured_eta(recorded):
    """f1/f2/f3 pick the dry/mini/full profile (issue 14), and the preview shows the ETA measured from
    the last finished run with the same settings, before the user launches."""
    import json

    from textual.widgets import Input, Static

    from w4tui.ui.screens.stage_form import StageFormScreen

    data = recorded.paths.data
    data.mkdir(parents=True, exist_ok=True)
    record = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello " * 20}]}
    (data / "web4.jsonl").write_text("\n".join(json.dumps(record) for _ in range(200)) + "\n")
    t = recorded.train
    finished = recorded.paths.outputs / "adapters" / "20251120-2100"
    finished.mkdir(parents=True, exist_ok=True)
    args = {
        "base_model": str(recorded.model.dir),
        "max_seq_length": t.max_seq_length,
        "batch_size": t.batch_size,
        "gradient_accumulation": t.gradient_accumulation,
        "lora_r": t.lora_r,
    }
    (finished / "training_run.json").write_text(
        json.dumps({"args": args, "tokens_per_second": 2.0, "device": "mps", "ended": 1763668800.0})
    )
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "s")
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the train form")
        form = app.screen
        preview = form.query_one("#preview", Static)
        await until(pilot, lambda: "samples" in text_of(preview), what="the dataset preview")
        assert "ETA: about " in text_of(preview) and "at 2 tokens/s, the rate of 20251120-2100 on mps" in text_of(
            preview
        )
        profile = next(i for i, (flag, _) in enumerate(form.fields) if flag == "--profile")
        assert "f1 dry" in text_of(form.query_one("#error", Static))  # the keys are said in the form itself
        await pilot.press("f1")
        await settle(pilot)
        assert form.query_one(f"#f{profile}", Input).value == "dry"
        assert "90 train / 10 eval" in text_of(preview)  # 100 of the 200 samples, eval_fraction 0.1
        await pilot.press("f3")
        await settle(pilot)
        assert form.query_one(f"#f{profile}", Input).value == "full" and "180 train / 20 eval" in text_of(preview)
        await pilot.press("escape")
