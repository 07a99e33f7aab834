"""`w4tui daemon --install-launchd`: the LaunchAgent on macOS, the systemd user unit elsewhere; and the
caffeinate line that keeps a Mac awake during a night (not run on Linux: there is none)."""

from __future__ import annotations

import plistlib
import sys

from core.config import load_config
from w4tui.nightly import awake
from w4tui.nightly.install import LABEL, install


def test_launchagent_written_with_the_bootstrap_line(tmp_path, config_file):
    config = load_config(config_file)
    lines = install(config, platform="darwin", home=tmp_path)
    plist = tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    agent = plistlib.loads(plist.read_bytes())
    assert agent["ProgramArguments"] == [sys.executable, "-m", "w4tui", "--config", str(config.file), "daemon"]
    assert agent["RunAtLoad"] and agent["KeepAlive"] and agent["ProcessType"] == "Standard"
    assert agent["StandardOutPath"] == str(config.paths.state / "daemon.log")
    assert f"  launchctl bootstrap gui/$(id -u) {plist}" in lines


def test_linux_prints_a_systemd_user_unit_and_writes_nothing(tmp_path, config_file):
    config = load_config(config_file)
    home = tmp_path / "home"
    home.mkdir()
    text = "\n".join(install(config, platform="linux", home=home))
    assert f"ExecStart={sys.executable} -m w4tui --config {config.file} daemon" in text
    assert "KillMode=process" in text  # stopping the daemon leaves a night's detached runs alone
    assert "systemctl --user enable --now w4tui.service" in text
    assert not any(home.iterdir())


def test_caffeinate_keeps_the_machine_awake_for_the_night_only_on_macos():
    assert awake.caffeinate_command(4242) == ["caffeinate", "-i", "-s", "-w", "4242"]
    assert "-d" not in awake.caffeinate_command(1)  # the display may sleep
    assert awake.keep_awake(platform="linux") is None
