"""`w4tui schedule` as a user with a config of their own reads it: every hint they would paste into
another shell names that config (without it the command would act on the embedded default)."""

from __future__ import annotations

from w4tui.cli import main


def schedule(capsys, config_file, *args) -> str:
    assert main(["--config", str(config_file), "schedule", *args]) == 0
    return capsys.readouterr().out


def test_schedule_hints_name_the_config_in_use(tmp_path, capsys):
    config_file = tmp_path / "my config.toml"  # a space: the hint quotes it as a shell needs
    config_file.write_text('[schedule]\nenabled = true\ntime = "21:30"\n')
    quoted = f"'{config_file}'"
    out = schedule(capsys, config_file)
    assert f"(start `w4tui --config {quoted} daemon`, or open the TUI)" in out
    assert f"w4tui --config {quoted} schedule --resume" in schedule(capsys, config_file, "--pause")
    assert f"schedule paused (w4tui --config {quoted} schedule --resume)" in schedule(capsys, config_file)
    schedule(capsys, config_file, "--resume")


def test_a_disabled_schedule_says_which_file_disables_it(tmp_path, capsys):
    config_file = tmp_path / "config.toml"
    config_file.write_text("[schedule]\nenabled = false\n")
    out = schedule(capsys, config_file)
    assert out.splitlines()[0].startswith(f"schedule disabled ([schedule] enabled = false in {config_file})")
    assert "start `" not in out  # a daemon holding a disabled schedule would run nothing
    assert f"enabled = false in {config_file})" in schedule(capsys, config_file, "--skip-next")
    # pausing a disabled schedule says that it runs nothing anyway
    assert f"paused (w4tui --config {config_file} schedule --resume to resume); the schedule itself is disabled" in (
        schedule(capsys, config_file, "--pause")
    )


def test_a_skipped_night_says_why_once_and_exits_0(tmp_path, capsys):
    config_file = tmp_path / "config.toml"
    config_file.write_text("")  # no incoming file: tonight has nothing new
    assert main(["--config", str(config_file), "nightly", "--now"]) == 0
    out = capsys.readouterr().out
    assert out.count("no new data") == 1, out
    assert out.splitlines()[-1].startswith("night skipped: no new data: no file matching incremental_*.jsonl")
    # `w4tui runs` says how the night ended (its column was empty: a night has no output path).
    assert main(["--config", str(config_file), "runs"]) == 0
    night = next(line for line in capsys.readouterr().out.splitlines() if " nightly " in line)
    assert night.endswith(
        "skipped: no new data: no file matching incremental_*.jsonl in " + str(tmp_path / "data/incoming")
    )


def test_a_cancelled_night_reads_once_and_its_step_is_not_shown_running():
    from w4tui.nightly.cli import final_line
    from w4tui.nightly.status import night_line, step_durations

    night = {
        "key": "now-1",
        "started": 100.0,
        "ended": 110.0,
        "outcome": "cancelled",
        "reason": "cancelled",
        "build": "nightly-x",
        "steps": [{"step": "train", "run": "r", "started": 101.0}],  # cancelled before it recorded an end
    }
    assert final_line(night) == "night cancelled (build nightly-x)"  # was "night cancelled: cancelled (...)"
    assert step_durations(night) == "train cancelled"  # was "train …", as if still running
    assert night_line(night).endswith("[train cancelled]")
    assert step_durations({**night, "outcome": "running"}) == "train …"


def test_two_nights_started_within_one_second_are_two_nights(tmp_path, capsys, monkeypatch):
    # Both stopped at the same bad line at once: they shared the key now-<second>, and the history
    # showed one night.
    from core.config import load_config
    from w4tui.nightly.ledger import Ledger

    config_file = tmp_path / "config.toml"
    config_file.write_text("")
    incoming = tmp_path / "data" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "incremental_2026-12-01.jsonl").write_text("{not json\n")
    monkeypatch.setattr("w4tui.nightly.scheduler.time.strftime", lambda *a: "20261201-213000")  # one second
    for _ in range(2):
        assert main(["--config", str(config_file), "nightly", "--now"]) == 1
    nights = Ledger.open(load_config(config_file)).nights()
    assert [(n["outcome"], n["failed_step"]) for n in nights] == [("failed", "data")] * 2
    assert len({n["key"] for n in nights}) == 2
