"""TUI startup and CPU use, against a minimal Textual app measured in the same run.

    python bench/bench_tui.py               # ~3.5 min: 7 starts of each app, 60 s per CPU phase
    python bench/bench_tui.py --quick       # ~1 min: 3 starts, 15 s per CPU phase

First frame: wall time from spawning `w4tui --config CFG` (the real entry point: CLI, config, app) in a
120x36 pseudo-terminal to the end of the first synchronized-output block that holds the whole screen
(the pane bar and the footer). The reference is a minimal Textual app (one Static and a Footer) run the
same way. CPU: percent of one core (user + system time of the process, all its threads) over the
phase: the TUI idle on a workspace with finished runs, then following a live train-like run that
writes 10 metrics events per second (tests/support/fake_train.py, started through the runner like any stage).
Targets: first frame <= 0.35 s median, <= 0.5 % idle, <= 1.0 % following.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

import psutil  # noqa: E402

SIZE = (36, 120)  # rows, columns
BEGIN, END = b"\x1b[?2026h", b"\x1b[?2026l"
QUERY, REPLY = b"\x1b[?2026$p", b"\x1b[?2026;2$y"  # DECRQM for mode 2026, and "supported, reset"
OURS = [b"Training", b"Stages", b"palette"]  # the pane bar, and the footer (drawn last)
REF = [b"hello", b"Quit"]
MINIMAL = """\
from textual.app import App
from textual.widgets import Footer, Static
class Minimal(App):
    BINDINGS = [("q", "quit", "Quit")]
    def compose(self):
        yield Static("hello")
        yield Footer()
Minimal().run()
"""


class Term:
    """A process on a pseudo-terminal of SIZE whose output is read (and kept) as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[0], SIZE[1], 0, 0))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True
        )
        os.close(slave)
        self.output = b""
        self.answered = False

    def drain(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 1 << 16)
            except OSError:
                return False
            if not self.answered and QUERY in self.output:
                # Answer as a terminal with synchronized output (kitty, iTerm2, WezTerm, ...) does, so
                # Textual brackets each frame and the end of the first one can be seen.
                os.write(self.master, REPLY)
                self.answered = True
            elif len(self.output) > 1 << 22:
                self.output = self.output[-(1 << 20) :]  # a long CPU phase: keep the tail only
        return True

    def first_frame(self, markers: list[bytes], limit: float = 20.0) -> float:
        """Seconds from spawn to the end of the output block after which the screen holds every marker
        (Textual paints the screen, then the footer in a later, partial frame)."""
        while time.perf_counter() - self.started < limit:
            self.drain(0.002)
            end = self.output.rfind(END)
            if end != -1 and all(m in self.output[:end] for m in markers):
                return time.perf_counter() - self.started
        raise RuntimeError(f"no complete frame in {limit} s; output ends {self.output[-300:]!r}")

    def cpu_percent(self, seconds: float) -> float:
        proc = psutil.Process(self.proc.pid)
        before, t0 = proc.cpu_times(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.drain(0.1)
        after = proc.cpu_times()
        used = (after.user + after.system) - (before.user + before.system)
        return 100.0 * used / (time.perf_counter() - t0)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


def env_for(config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "W4TUI_CONFIG": str(config),
        "OLLAMA_HOST": "http://127.0.0.1:9",
        "TEXTUAL_ANIMATIONS": "none",
    }


def time_starts(argv: list[str], env: dict[str, str], markers: list[bytes], n: int) -> list[float]:
    out = []
    for _ in range(n):
        term = Term(argv, env)
        try:
            out.append(term.first_frame(markers))
        finally:
            term.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--startup-only", action="store_true", help="skip the CPU phases")
    args = parser.parse_args()
    starts, seconds = (3, 15.0) if args.quick else (7, 60.0)
    import tui_workspace

    work = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    try:
        config = tui_workspace.build(work / "ws")
        env = env_for(config)
        w4tui = [str(Path(sys.executable).parent / "w4tui"), "--config", str(config)]
        if not Path(w4tui[0]).exists():
            w4tui = [sys.executable, "-m", "w4tui", "--config", str(config)]
        (work / "minimal.py").write_text(MINIMAL)
        minimal = [sys.executable, str(work / "minimal.py")]

        time_starts(w4tui, env, OURS, 1)  # warm the disk cache for both
        time_starts(minimal, env, REF, 1)
        ours, ref = [], []
        for _ in range(starts):  # interleaved, so a busy moment on a shared machine hits both alike
            ours += time_starts(w4tui, env, OURS, 1)
            ref += time_starts(minimal, env, REF, 1)
        print(f"first frame (median of {starts}, {SIZE[1]}x{SIZE[0]}):")
        print(f"  w4tui           {statistics.median(ours):.3f} s   (min {min(ours):.3f}, max {max(ours):.3f})")
        print(f"  minimal Textual {statistics.median(ref):.3f} s   (min {min(ref):.3f}, max {max(ref):.3f})")
        print(f"  ratio           {statistics.median(ours) / statistics.median(ref):.2f}x   target <= 0.35 s")
        if args.startup_only:
            return 0

        term = Term(minimal, env)
        term.first_frame(REF)
        time.sleep(1)
        ref_idle = term.cpu_percent(seconds)
        term.close()

        term = Term(w4tui, env)
        try:
            term.first_frame(OURS)
            term.cpu_percent(3.0)  # let the first scans and samples settle
            idle = term.cpu_percent(seconds)
            from core.config import load_config
            from w4tui.runs.runner import Runner

            runner = Runner(load_config(config))
            steps = int((seconds + 15) * 10)
            run = runner.start_command(
                "train",
                [
                    sys.executable,
                    str(ROOT / "tests" / "support" / "fake_train.py"),
                    "--steps",
                    str(steps),
                    "--rate",
                    "10",
                ],
                cancel_grace_s=5,
            )
            term.cpu_percent(3.0)  # the switch to the new run reads its history once
            following = term.cpu_percent(seconds)
            live = runner.get(run.id).live
            runner.cancel(run.id)
        finally:
            term.close()
        print(f"CPU, percent of one core over {seconds:.0f} s:")
        print(f"  w4tui idle              {idle:.2f} %   target <= 0.5 %")
        print(
            f"  w4tui following 10 ev/s {following:.2f} %   target <= 1.0 %" + ("" if live else "  (RUN ENDED EARLY)")
        )
        print(f"  minimal Textual idle    {ref_idle:.2f} %")
    finally:
        time.sleep(1)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
