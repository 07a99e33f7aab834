"""The schedule under a controllable clock: a night due while asleep runs once on wake within the grace,
beyond the grace it is recorded missed, missed nights coalesce into one run, a restarted holder still
runs the night it missed, pause and skip hold. Real APScheduler, real SQLite job store; only the clock
and the night starter are stand-ins (the starter records what would have started)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import pytest
from fake_clock import FakeClock

from core.config import load_config
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.scheduler import NightScheduler

MON = datetime(2026, 11, 30, 20, 0).astimezone()  # a Monday, 20:00 local


@dataclass
class FakeRun:
    id: str


@pytest.fixture
def setup(tmp_path, monkeypatch):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[schedule]\nenabled = true\ntime = "21:30"\ndays = "mon-sun"\nmisfire_grace_hours = 6\n')
    clock = FakeClock(MON).install(monkeypatch)
    started: list[str] = []

    def make():
        def starter(config, key):
            started.append(key)
            return FakeRun(f"run-{key}")

        return NightScheduler(load_config(config_file), kind="test", poll_s=0.02, starter=starter)

    schedulers = []

    def new():
        s = make()
        assert s.start()
        schedulers.append(s)
        return s

    yield clock, started, new, config_file
    for s in schedulers:
        s.shutdown()


def settle(condition=lambda: False, timeout=5.0):
    """Let the scheduler thread run its rounds (it polls every 20 ms) until ``condition`` or a quiet spell."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def nights(config_file):
    return {n["key"]: n for n in Ledger.open(load_config(config_file)).nights()}


def test_night_due_while_asleep_runs_once_on_wake_within_grace(setup):
    clock, started, new, config_file = setup
    new()
    settle(timeout=0.3)
    assert started == []  # 20:00: nothing due
    clock.set(datetime(2026, 11, 30, 23, 0).astimezone())  # woke 1.5 h after 21:30, grace 6 h
    assert settle(lambda: started)
    settle(timeout=0.3)
    assert started == ["scheduled-20261130-2130"]
    night = nights(config_file)["scheduled-20261130-2130"]
    assert night["trigger"] == "schedule" and night["run"] == "run-scheduled-20261130-2130"


def test_beyond_grace_is_recorded_missed_not_run(setup):
    clock, started, new, config_file = setup
    new()
    clock.set(datetime(2026, 12, 1, 8, 0).astimezone())  # 10.5 h late, grace 6 h
    assert settle(lambda: "scheduled-20261130-2130" in nights(config_file))
    settle(timeout=0.3)
    assert started == []
    night = nights(config_file)["scheduled-20261130-2130"]
    assert night["outcome"] == "missed" and "beyond the 6 h grace" in night["reason"]


def test_two_missed_nights_coalesce_into_one_run(setup):
    clock, started, new, config_file = setup
    new()
    clock.set(datetime(2026, 12, 2, 23, 0).astimezone())  # asleep Mon 20:00 -> Wed 23:00: Mon, Tue, Wed due
    assert settle(lambda: started)
    settle(timeout=0.3)
    assert started == ["scheduled-20261202-2130"]  # one run, for the newest
    recorded = nights(config_file)
    for day in ("20261130", "20261201"):
        assert recorded[f"scheduled-{day}-2130"]["outcome"] == "missed"
        assert "coalesced" in recorded[f"scheduled-{day}-2130"]["reason"]


def test_a_night_due_while_no_process_held_the_scheduler_runs_at_restart(setup):
    clock, started, new, config_file = setup
    first = new()
    first.shutdown()  # the daemon stopped (machine off) before 21:30
    clock.set(datetime(2026, 11, 30, 22, 0).astimezone())
    new()  # started again at login: the stored job keeps its 21:30 run time
    assert settle(lambda: started)
    assert started == ["scheduled-20261130-2130"]


def test_a_scheduled_time_runs_at_most_once_across_holders(setup):
    clock, started, new, config_file = setup
    first = new()
    clock.set(datetime(2026, 11, 30, 21, 31).astimezone())
    assert settle(lambda: started)
    # The job store lost its update (a crash right after firing): a new holder sees 21:30 due again.
    ledger = first.ledger
    first.shutdown()
    again = new()
    again.fire()
    assert started == ["scheduled-20261130-2130"]
    assert len([n for n in ledger.nights() if n["key"] == "scheduled-20261130-2130"]) == 1


def test_pause_and_skip(setup):
    clock, started, new, config_file = setup
    s = new()
    s.ledger.set_flag("paused", "1")
    clock.set(datetime(2026, 11, 30, 21, 31).astimezone())
    settle(timeout=0.4)
    assert started == [] and nights(config_file) == {}
    s.ledger.set_flag("paused", None)
    s.ledger.set_flag("schedule_since", str(clock.t.timestamp()))
    s.ledger.set_flag("skip", str(datetime(2026, 12, 1, 21, 30).astimezone().timestamp()))
    clock.set(datetime(2026, 12, 1, 21, 31).astimezone())
    assert settle(lambda: "scheduled-20261201-2130" in nights(config_file))
    assert nights(config_file)["scheduled-20261201-2130"]["outcome"] == "skipped"
    clock.set(datetime(2026, 12, 2, 21, 31).astimezone())
    assert settle(lambda: started)
    assert started == ["scheduled-20261202-2130"]


def test_the_job_store_holds_coalesce_max_instances_and_grace(setup):
    clock, started, new, config_file = setup
    job = new().sched.get_job("nightly")
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)
    assert job.next_run_time == datetime(2026, 11, 30, 21, 30).astimezone()
