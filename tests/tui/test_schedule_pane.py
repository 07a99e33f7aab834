"""The Schedule pane on the recorded workspace with a few recorded nights: the history, a failed night's
error line, the run-now key starting a real night (skipped: no data in the workspace), pause/resume,
and a snapshot at 80x24."""

from __future__ import annotations

import pytest
import tui_workspace as ws
from textual.widgets import DataTable, Static
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, text_of, until, utc  # noqa: F401

from w4tui.nightly.ledger import Ledger

DAY = 86400


def record_nights(config) -> None:
    ledger = Ledger.open(config)
    t = ws.NOW - 2 * DAY
    steps = [
        {"step": s, "run": f"r-{s}", "started": t + 60 * i, "ended": t + 60 * i + 50, "status": "succeeded"}
        for i, s in enumerate(("train", "convert", "quantize", "deploy", "verify"))
    ]
    ledger.claim_night(
        "scheduled-a",
        scheduled_for=t,
        trigger="schedule",
        started=t,
        ended=t + 300,
        outcome="promoted",
        data_file="/in/incremental_2025-11-24.jsonl",
        samples=48,
        build="nightly-a",
        steps=steps,
    )
    failed = [dict(s) for s in steps[:2]]
    failed[-1]["status"] = "failed"
    ledger.claim_night(
        "scheduled-b",
        scheduled_for=t + DAY,
        trigger="schedule",
        started=t + DAY,
        ended=t + DAY + 120,
        outcome="failed",
        failed_step="convert",
        data_file="/in/incremental_2025-11-25.jsonl",
        samples=52,
        build="nightly-b",
        steps=failed,
        error="/models/base already has an adapter merged in (w4tui_merge.json)",
    )
    ledger.claim_night(
        "scheduled-c",
        scheduled_for=t + 2 * DAY - 3600,
        trigger="schedule",
        started=t + 2 * DAY,
        ended=t + 2 * DAY,
        outcome="missed",
        reason="missed: 13.0 h late, beyond the 12 h grace",
    )
    ledger.close()


pytestmark = pytest.mark.anyio


async def test_history_and_a_failed_nights_error(recorded):
    record_nights(recorded)
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("7")
        pane = app.screen.query_one("#schedule")
        table = pane.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 3, what="the nights")
        assert [str(table.get_cell_at((r, 1))) for r in range(3)] == ["missed", "failed", "promoted"]
        assert str(table.get_cell_at((2, 3))) == "5m00s"
        head = text_of(pane.query_one("#schedule-head", Static))
        assert "schedule disabled" in head and "nobody holds the scheduler" in head
        table.move_cursor(row=1)
        detail = pane.query_one("#night-detail", Static)
        await until(pilot, lambda: "already has an adapter merged in" in text_of(detail), what="the error line")
        assert "failed at convert" in text_of(detail)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_every_column_fits_and_the_detail_shows_what_they_cut(recorded, size):
    record_nights(recorded)
    app = make_app(recorded)
    async with app.run_test(size=size) as pilot:
        await pilot.press("7")
        pane = app.screen.query_one("#schedule")
        table = pane.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 3, what="the nights")
        await settle(pilot)
        # The build column is on screen (it was past the pane's edge): every column fits the table.
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= table.size.width
        assert str(table.get_cell_at((2, 2))).endswith("2025-11-24 (48)")  # a cut keeps the date and samples
        assert str(table.get_cell_at((2, 4))) == "nightly-a"
        table.move_cursor(row=2)
        detail = pane.query_one("#night-detail", Static)
        await until(pilot, lambda: "build nightly-a" in text_of(detail), what="the promoted night's detail")
        assert "data incremental_2025-11-24.jsonl (48 samples)" in text_of(detail)
        assert "steps train 0m50s, convert 0m50s, quantize 0m50s, deploy 0m50s, verify 0m50s" in text_of(detail)


async def test_a_cancelled_night_says_cancelled_once(recorded):
    ledger = Ledger.open(recorded)
    ledger.claim_night(
        "now-c", trigger="now", started=ws.NOW - 60, ended=ws.NOW, outcome="cancelled", reason="cancelled"
    )
    ledger.close()
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("7")
        detail = app.screen.query_one("#schedule").query_one("#night-detail", Static)
        await until(pilot, lambda: "now-c" in text_of(detail), what="the night's detail")
        assert text_of(detail).count("cancelled") == 1, text_of(detail)


async def test_run_now_starts_a_night_and_pause_toggles(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("7")
        pane = app.screen.query_one("#schedule")
        await until(pilot, lambda: pane.status is not None, what="the schedule")
        pane.query_one(DataTable).focus()
        await pilot.press("n")
        await until(pilot, lambda: any("night started" in n for n in notifications(app)), what="the night to start")
        nights = lambda: Ledger.open(recorded).nights()  # noqa: E731
        await until(pilot, lambda: nights() and nights()[0]["outcome"] == "skipped", timeout=30, what="the night")
        assert "no new data" in nights()[0]["reason"]
        await pilot.press("p")
        await until(pilot, lambda: Ledger.open(recorded).flag("paused") is not None, what="paused")
        pane.poke("schedule")
        await until(
            pilot,
            lambda: (
                "paused" in text_of(pane.query_one("#schedule-head", Static))
                or "disabled" in text_of(pane.query_one("#schedule-head", Static))
            ),
            what="the head",
        )
        await pilot.press("p")
        await until(pilot, lambda: Ledger.open(recorded).flag("paused") is None, what="resumed")
        await settle(pilot)


def test_schedule_pane_80x24(snap_compare, recorded):
    record_nights(recorded)

    async def run_before(pilot):
        await pilot.press("7")
        pane = pilot.app.screen.query_one("#schedule")
        await until(pilot, lambda: pane.query_one(DataTable).row_count == 3, what="the nights")
        await until(pilot, lambda: "missed" in text_of(pane.query_one("#night-detail", Static)), what="the detail")
        await settle(pilot, rounds=4)

    assert snap_compare(make_app(recorded), terminal_size=(80, 24), run_before=run_before)


async def test_the_tui_holds_the_scheduler_unless_a_daemon_does(recorded):
    import os

    from core.config import load_config
    from w4tui.nightly.lock import SchedulerLock

    enabled = recorded.file.parent / "enabled.toml"  # beside it: the same relative paths
    enabled.write_text(f'{recorded.file.read_text()}\n[schedule]\nenabled = true\ntime = "21:30"\n')
    config = load_config(enabled)
    daemon = SchedulerLock(config.paths.state)
    assert daemon.acquire("daemon")  # this test process plays the daemon
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("7")
        pane = app.screen.query_one("#schedule")
        head = pane.query_one("#schedule-head", Static)
        await until(pilot, lambda: f"held by daemon pid {os.getpid()}" in text_of(head), what="read-only")
        assert "next night:" in text_of(head) and "21:30" in text_of(head)
        daemon.release()  # the daemon went away: the TUI takes the schedule over
        pane.poke("schedule")
        await until(pilot, lambda: "this TUI holds the scheduler" in text_of(head), what="the take-over")
        assert SchedulerLock(config.paths.state).holder()["kind"] == "tui"
    assert SchedulerLock(config.paths.state).holder() is None  # released when the TUI quits


async def test_the_detail_shows_the_eval_losses_and_whether_the_main_data_one_rose(recorded, tmp_path):
    """Issue 14: every night's eval loss on a held-out slice of the main dataset, rising or not."""
    from w4tui.nightly.night import train_losses

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "training_run.json").write_text('{"eval_loss": 0.9, "main_eval_loss": 1.25, "final_loss": 0.5}')
    assert train_losses(adapter) == {"eval_loss": 0.9, "main_eval_loss": 1.25}
    assert train_losses(tmp_path / "gone") == {}
    ledger = Ledger.open(recorded)
    t = ws.NOW - 2 * DAY
    for i, (key, losses) in enumerate([("n1", {"main_eval_loss": 1.2}), ("n2", train_losses(adapter))]):
        step = {"step": "train", "run": f"r{i}", "started": t + i * DAY, "ended": t + i * DAY + 50}
        ledger.claim_night(
            key, scheduled_for=t + i * DAY, trigger="schedule", started=t + i * DAY, ended=t + i * DAY + 60,
            outcome="promoted", build=f"nightly-{key}", steps=[{**step, "status": "succeeded", **losses}],
        )  # fmt: skip
    ledger.close()
    app = make_app(recorded)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("7")
        pane = app.screen.query_one("#schedule")
        table = pane.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 2, what="the nights")
        table.move_cursor(row=0)
        detail = pane.query_one("#night-detail", Static)
        await until(pilot, lambda: "build nightly-n2" in text_of(detail), what="the newest night's detail")
        assert "eval loss 0.9000, main-data eval loss 1.2500 (▲ +0.0500 since the night before)" in text_of(detail)
