"""End to end: start a real (tiny) training from the TUI with a key and watch its progress arrive."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_helpers import ROOT, anyio_backend, settle, until  # noqa: F401

from core.config import load_config
from w4tui.demo.samples import write_demo_data
from w4tui.ui.screens.stage_form import StageFormScreen

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.skipif(not (ROOT / "stages" / "train_lora.py").exists(), reason="stages/train_lora.py is not written yet")
async def test_train_started_from_the_tui_reports_progress_to_the_training_pane(tmp_path, tiny_model, monkeypatch):
    write_demo_data(tmp_path / "data" / "train", tmp_path / "data" / "incoming", count=24)
    (tmp_path / "config.toml").write_text(f"""
[model]
base = "{tiny_model}"
dir = "{tiny_model}"
[train]
max_seq_length = 64
batch_size = 4
gradient_accumulation = 1
gradient_checkpointing = false
epochs = 1
checkpoint_every = 3
eval_fraction = 0.1
cache = false
device = "cpu"
""")
    monkeypatch.setenv("W4TUI_CONFIG", str(tmp_path / "config.toml"))
    config = load_config(tmp_path / "config.toml")
    from w4tui.ui.app import W4App

    app = W4App(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "s")  # Stages, train, start
        await until(pilot, lambda: isinstance(app.screen, StageFormScreen), what="the form")
        assert ("--base_model", str(tiny_model)) in app.screen.fields
        await pilot.press("ctrl+s")
        training = app.screen.query_one("#training")
        await until(pilot, lambda: training.run is not None and training.run.live, timeout=30, what="the run")
        await until(pilot, lambda: training.state.step >= 1, timeout=120, what="the first training step")
        total = training.state.total_steps
        assert total and training.state.losses and training.state.device == "cpu"
        await until(pilot, lambda: training.state.final is not None, timeout=120, what="the end of the run")
        assert training.state.final == "succeeded", training.state.error
        assert training.state.step == total and training.state.last_checkpoint_step is not None
        adapter = Path(training.state.adapter)
        assert (adapter / "adapter_model.safetensors").is_file()
        await until(
            pilot,
            lambda: "succeeded" in str(app.screen.query_one("#stages-table").get_cell("train", "status")),
            what="Stages to show the end",
        )
        artifacts = app.screen.query_one("#artifacts")
        await until(pilot, lambda: str(adapter) in [a.path for a in artifacts.artifacts], what="the adapter listed")
