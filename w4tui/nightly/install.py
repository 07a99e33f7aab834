"""Run `w4tui daemon` at login: a launchd LaunchAgent on macOS, a systemd user unit elsewhere."""

from __future__ import annotations

import os
import plistlib
import shlex
import sys
from pathlib import Path

from core.config import Config
from core.fsutil import atomic_write_bytes

LABEL = "com.w4tui.daemon"


def daemon_command(config: Config) -> list[str]:
    return [sys.executable, "-m", "w4tui", "--config", str(config.file), "daemon"]


def launchd_plist(config: Config) -> bytes:
    log = str(config.paths.state / "daemon.log")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if os.environ.get("OLLAMA_HOST"):
        env["OLLAMA_HOST"] = os.environ["OLLAMA_HOST"]
    return plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": daemon_command(config),
            "WorkingDirectory": str(config.base_dir),
            "RunAtLoad": True,
            "KeepAlive": True,  # restarted if it dies; the lock makes a second one wait
            "ProcessType": "Standard",  # "Background" would throttle the training it starts
            "EnvironmentVariables": env,
            "StandardOutPath": log,
            "StandardErrorPath": log,
        }
    )


def systemd_unit(config: Config) -> str:
    return "\n".join(
        [
            "[Unit]",
            "Description=w4tui nightly scheduler",
            "After=network-online.target",
            "",
            "[Service]",
            f"ExecStart={shlex.join(daemon_command(config))}",
            f"WorkingDirectory={config.base_dir}",
            "Restart=on-failure",
            "RestartSec=30",
            # The night's runs are detached into their own sessions; stopping the daemon must not kill them.
            "KillMode=process",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def install(config: Config, platform: str = sys.platform, home: Path | None = None) -> list[str]:
    """Write the LaunchAgent (macOS) and return the lines to print; elsewhere print the systemd unit."""
    home = home or Path.home()
    if platform == "darwin":
        path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        atomic_write_bytes(path, launchd_plist(config))
        return [
            f"wrote {path}",
            "load it now (and at every login) with:",
            f"  launchctl bootstrap gui/$(id -u) {path}",
            f"stop it with: launchctl bootout gui/$(id -u)/{LABEL}",
        ]
    unit = home / ".config" / "systemd" / "user" / "w4tui.service"
    return [
        f"# no launchd here; the equivalent systemd user unit, for {unit}:",
        systemd_unit(config),
        "# then: systemctl --user daemon-reload && systemctl --user enable --now w4tui.service",
        "# (and loginctl enable-linger $USER to keep it running while you are logged out)",
    ]
