"""A snapshot of every screen a user opens from the main one: help, the stage form, the artifact
inspect view, the confirm and text-input dialogs, opened with their keys on the recorded workspace.
Update with `pytest tests/tui/test_tui_screens.py --snapshot-update`, then look at the SVGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tui_workspace
from filelock import FileLock
from test_tui_snapshots import _settled
from tui_helpers import make_app, settle, until, utc  # noqa: F401

from core.config import load_config

# Forms and the inspect view show absolute paths: the workspace sits at one fixed place.
FIXED = Path("/tmp/w4tui-screen-snapshots")

SCREENS = {
    "help": ("question_mark",),
    "stage_form": ("5", "down", "s"),  # the Stages pane's train row: the form filled in from the config
    "inspect": ("3", "i"),  # the Artifacts pane's newest artifact
    "confirm_delete": ("3", "d"),
    "compare": ("3", "m", "ctrl+end", "c"),  # the newest artifact beside the last one (issue 14)
}


@pytest.fixture
def recorded_fixed(monkeypatch, utc):
    # One test at a time on the machine owns the fixed place (other xdist workers, other pytest runs).
    with FileLock(f"{FIXED}.lock"):
        shutil.rmtree(FIXED, ignore_errors=True)
        config_file = tui_workspace.build(FIXED / "ws")
        monkeypatch.setenv("W4TUI_CONFIG", str(config_file))
        yield load_config(config_file)
        shutil.rmtree(FIXED, ignore_errors=True)


@pytest.mark.parametrize("name", list(SCREENS))
def test_screen_100x30(snap_compare, recorded_fixed, name):
    async def run_before(pilot):
        await _settled(pilot)
        await pilot.press(*SCREENS[name])
        await until(pilot, lambda: len(pilot.app.screen_stack) > 1, what=f"the {name} screen to open")
        await settle(pilot, rounds=6)

    assert snap_compare(make_app(recorded_fixed), terminal_size=(100, 30), run_before=run_before)
