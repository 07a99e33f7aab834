"""Snapshots of the main screen on the recorded workspace: 80x24 (one pane at a time) and 160x48
(several panes). Fixed clock, fixed system samples, TZ=UTC: the SVGs are the same on every machine.
Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update`, then look at the SVGs."""

from __future__ import annotations

import pytest
from tui_helpers import make_app, recorded, settle, until, utc  # noqa: F401


def _loaded(app) -> bool:
    """Every pane on screen shows its data (the polling threads have delivered)."""
    screen = app.screen
    if not screen.runs or not all(p.ready for p in screen.panes()):
        return False
    shown = {p.PANE_ID: p for p in screen.panes() if p.display}
    checks = {
        "training": lambda p: p.state.final == "succeeded" and p.query_one("LineChart")._version == p.state.version,
        "memory": lambda p: p.history.latest is not None and p.machine is not None,
        "artifacts": lambda p: len(p.artifacts) == 6 and p.query_one("DataTable").row_count == 6,
        "logs": lambda p: bool(p.lines) and bool(str(p.query_one("#log-tail").content)),
        "stages": lambda p: p._detail_key is not None and bool(str(p.query_one("#stage-detail").content)),
    }
    missing = [k for k, p in shown.items() if k in checks and not checks[k](p)]
    app.__dict__["_snapshot_missing"] = missing
    return not missing


async def _settled(pilot) -> None:
    await until(
        pilot,
        lambda: _loaded(pilot.app),
        what=lambda: f"every shown pane to have its data (missing: {pilot.app.__dict__.get('_snapshot_missing')})",
    )
    await settle(pilot, rounds=6)


@pytest.mark.parametrize("keys", [(), ("5", "down", "down", "down"), ("3",)], ids=["training", "failed", "artifacts"])
def test_main_screen_80x24(snap_compare, recorded, keys):
    async def run_before(pilot):
        await _settled(pilot)
        await pilot.press(*keys)
        await _settled(pilot)

    assert snap_compare(make_app(recorded), terminal_size=(80, 24), run_before=run_before)


def test_main_screen_160x48(snap_compare, recorded):
    assert snap_compare(make_app(recorded), terminal_size=(160, 48), run_before=_settled)


def test_light_theme_160x48(snap_compare, recorded):
    async def run_before(pilot):
        pilot.app.theme = "w4tui-light"
        await pilot.press("3")
        await _settled(pilot)

    assert snap_compare(make_app(recorded), terminal_size=(160, 48), run_before=run_before)
