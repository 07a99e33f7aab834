"""Keep a Mac awake while a night runs: ``caffeinate -i -s -w <pid>`` holds an idle-sleep assertion
(and a system-sleep one on AC power) until the process ``pid`` exits. Not ``-d``: the display may
sleep. Other systems have no caffeinate; there the night runs as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from core.config import Config


def caffeinate_command(pid: int) -> list[str]:
    return ["caffeinate", "-i", "-s", "-w", str(pid)]


def keep_awake(
    config: Config | None = None, pid: int | None = None, platform: str = sys.platform
) -> subprocess.Popen | None:
    """Start caffeinate for ``pid`` (default: this process); None where there is none to start."""
    if platform != "darwin" or shutil.which("caffeinate") is None:
        return None
    return subprocess.Popen(
        caffeinate_command(pid or os.getpid()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
