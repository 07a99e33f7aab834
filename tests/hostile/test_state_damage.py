"""Damaged or read-only state files (issue 22 part 2): the ledger and the scheduler's job store are caches of
what is on disk (night records, runs, the config), so a damaged one is moved aside (never deleted), made
anew and said in one ``warning:`` line; one that cannot be written is one ``error:`` line naming it. A night
is never lost because of either."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import assert_one_line
from fake_clock import FakeClock

from core.config import load_config
from w4tui.nightly.ledger import LEDGER_FILE, Ledger
from w4tui.nightly.scheduler import STORE_FILE, NightScheduler

MON = datetime(2026, 11, 30, 20, 0).astimezone()  # a Monday, 20:00 local
GARBAGE = b"this is not a database\n" * 300


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[schedule]\nenabled = true\ntime = "21:30"\ndays = "mon-sun"\nmisfire_grace_hours = 6\n')
    monkeypatch.setenv("W4TUI_CONFIG", str(path))
    return path


def recorded_ledger(config) -> None:
    ledger = Ledger.open(config)
    ledger.claim_night("now-1", trigger="now", outcome="skipped", reason="no new data")
    ledger.claim_night("now-2", trigger="now", outcome="failed", failed_step="data", error="x.jsonl:3: bad")
    ledger.close()


def test_a_damaged_ledger_is_moved_aside_rebuilt_and_said_in_one_line(config_file, cli):
    config = load_config(config_file)
    recorded_ledger(config)
    path = config.paths.state / LEDGER_FILE
    path.write_bytes(GARBAGE)
    (config.paths.state / f"{LEDGER_FILE}-wal").write_bytes(b"old wal")
    outcome = cli("schedule")
    assert outcome.rc == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    warning = [line for line in outcome.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "file is not a database" in warning[0]
    assert f"{path} was damaged" in warning[0] and "moved aside to ledger.sqlite.damaged" in warning[0]
    assert (config.paths.state / "ledger.sqlite.damaged").read_bytes() == GARBAGE  # kept, never deleted
    assert (config.paths.state / "ledger.sqlite.damaged-wal").read_bytes() == b"old wal"  # still its pair
    assert "failed at data" in outcome.stdout and "no new data" in outcome.stdout  # the nights came back
    # damaged again: the first copy stays, the second gets a name of its own
    gc.collect()  # the command's ledger connections close, as they do when its process ends
    path.write_bytes(GARBAGE[:1000])
    again = Ledger.open(config)
    assert "moved aside to ledger.sqlite.damaged-2" in again.repaired
    assert (config.paths.state / "ledger.sqlite.damaged").read_bytes() == GARBAGE
    assert {n["key"] for n in again.nights()} == {"now-1", "now-2"}
    assert Ledger.open(config).repaired is None  # the rebuilt one is sound


def test_a_ledger_cut_short_is_found_at_open(config_file):
    config = load_config(config_file)
    ledger = Ledger.open(config)
    for i in range(400):  # enough pages that a cut loses some of them
        ledger.upsert_build(f"nightly-{i}", adapter="/a" * 200)
    ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    path = config.paths.state / LEDGER_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reopened = Ledger.open(config)
    assert reopened.repaired and "moved aside" in reopened.repaired
    reopened.builds()  # reads without an error


def test_the_night_itself_says_it_rebuilt_the_ledger(config_file, tmp_path, monkeypatch):
    from core.events import EventWriter, read_events
    from w4tui.nightly.night import run_night

    config = load_config(config_file)
    recorded_ledger(config)
    (config.paths.state / LEDGER_FILE).write_bytes(GARBAGE)
    events = tmp_path / "night.jsonl"
    night = run_night(config, "now-3", EventWriter("nightly", events, "r1"))
    assert night["outcome"] == "skipped"  # no data: the night ran, on the rebuilt ledger
    warnings = [e["message"] for e in read_events(events) if e.get("level") == "warning"]
    assert any("moved aside to ledger.sqlite.damaged" in w for w in warnings), warnings


@pytest.fixture
def readonly_state(tmpfs, config_file):
    """The state folder on a file system remounted read-only, with a ledger in it."""
    state = tmpfs("8m")
    config_file.write_text(config_file.read_text() + f'[paths]\nstate = "{state}"\n')
    config = load_config(config_file)
    recorded_ledger(config)
    subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
    return config


def test_a_read_only_ledger_is_one_line_and_no_night_starts(readonly_state, cli):
    config = readonly_state
    outcome = cli("nightly", "--now")
    assert_one_line(outcome, 1, str(config.paths.state))
    assert "ledger" in outcome.stderr and "writable" in outcome.stderr
    assert "recorded nothing" not in outcome.stderr + outcome.stdout
    assert not config.paths.runs.exists() or not any(config.paths.runs.glob("*-nightly-*"))


def test_a_read_only_ledger_stops_the_night_program_in_one_line(readonly_state, monkeypatch):
    """The night's own process (started while the ledger was writable, say) ends with the same line."""
    import contextlib
    import io

    from w4tui.nightly.night import main

    events = readonly_state.paths.runs.parent / "night-events.jsonl"
    monkeypatch.setenv("W4TUI_EVENTS", str(events))
    monkeypatch.setenv("W4TUI_RUN_ID", "r1")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--config", str(readonly_state.file), "--night", "now-3"])
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert rc == 1 and len(lines) == 1 and str(readonly_state.paths.state) in lines[0], err.getvalue()
    assert "Traceback" not in err.getvalue()


# -- the scheduler's job store -----------------------------------------------------------------------
@pytest.fixture
def scheduling(config_file, monkeypatch):
    clock = FakeClock(MON).install(monkeypatch)
    started: list[str] = []
    held: list[NightScheduler] = []

    def holder() -> NightScheduler:
        def starter(config, key):
            started.append(key)
            return type("FakeRun", (), {"id": f"run-{key}"})()

        sched = NightScheduler(load_config(config_file), kind="test", poll_s=0.02, starter=starter)
        held.append(sched)
        return sched

    yield clock, started, holder
    for sched in held:
        sched.shutdown()


def wait(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_damaged_job_store_is_made_anew_and_the_night_due_still_runs(scheduling, config_file):
    clock, started, holder = scheduling
    first = holder()
    assert first.start() and not first.repaired
    first.shutdown()  # the daemon stopped before 21:30 ...
    store = load_config(config_file).paths.state / STORE_FILE
    store.write_bytes(GARBAGE)  # ... and its job store was damaged meanwhile
    clock.set(datetime(2026, 11, 30, 22, 0).astimezone())
    again = holder()
    assert again.start()
    assert len(again.repaired) == 1 and f"{store} was damaged (file is not a database)" in again.repaired[0]
    assert "moved aside to scheduler.sqlite.damaged" in again.repaired[0] and "mon-sun at 21:30" in again.repaired[0]
    assert store.with_name("scheduler.sqlite.damaged").read_bytes() == GARBAGE
    assert wait(lambda: started)  # the 21:30 night, due while nobody held the schedule, is not lost
    assert started == ["scheduled-20261130-2130"]
    sqlite3.connect(store).execute("SELECT id FROM apscheduler_jobs").fetchall()  # a sound store again


def test_the_daemon_says_it_in_one_line(config_file, tmp_path):
    config = load_config(config_file)
    config.paths.state.mkdir(parents=True)
    (config.paths.state / STORE_FILE).write_bytes(GARBAGE)
    (config.paths.state / LEDGER_FILE).write_bytes(GARBAGE)
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "w4tui", "daemon", "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "W4TUI_CONFIG": str(config_file)},
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (config.paths.state / "scheduler.sqlite.damaged").exists():
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "Traceback" not in out + err, out + err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, out
    assert "ledger.sqlite was damaged" in warnings[0] and "scheduler.sqlite was damaged" in warnings[1]
    assert "holding the scheduler; next night:" in out
