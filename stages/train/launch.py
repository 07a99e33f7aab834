"""``--gpus N``: the train stage starts itself as a group of N ranks under PyTorch's own launcher
(``python -m torch.distributed.run``) and watches it. Standard library only: this runs before torch.

- Cancel: torchrun ignores SIGINT (stages/train/torchrun.py: its default would kill the ranks 30 s
  after asking, a step and a checkpoint of a 7B may need more); this process passes SIGINT to every
  rank, the ranks agree on the step to stop after, rank 0 checkpoints once, all exit.
- A rank that dies: torchrun notices within a tenth of a second and stops the others; this process
  then writes the one error line, naming the rank (torchrun's "Root Cause") and the last line it logged.
- Events: rank 0 writes them (its start aside: this process wrote that); a final event only when
  rank 0 could not (see GroupEvents), or when a rank failed: torchrun knows which failed first.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import ActionableError, Cancelled, StageError, UsageError
from core.events import FINAL_KINDS, EventReader, EventWriter

# A rank that fails for want of a peer (a collective's "Connection closed by peer") waits this long
# before exiting, so torchrun sees the peer that died first and names it; torchrun polls every 0.1 s and
# stops the waiting rank with SIGTERM at once.
PEER_GRACE_S = 3.0
RANK_LINE = re.compile(r"^\[rank (\d+)\] (.*)$")
# Other ranks' INFO lines repeat rank 0's: kept as their last line, not copied into the log.
QUIET = re.compile(r"^\[rank [1-9]\d*\] [\d-]+ [\d:,]+ INFO ")


def worker_rank() -> int | None:
    """This process's global rank when torchrun started it, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"])


def needed(args) -> bool:
    return worker_rank() is None and (args.gpus > 1 or args.nnodes > 1)


def torchrun_command(args, argv: list[str]) -> list[str]:
    """torchrun for one node (--standalone: its own rendezvous on a free port) or one node of many
    (the user's --nnodes/--node_rank/--rdzv_endpoint, the same on every node but the rank)."""
    cmd = [sys.executable, "-m", "stages.train.torchrun"]  # torch.distributed.run ignoring Ctrl-C
    if args.nnodes > 1:
        if not args.rdzv_endpoint:
            raise UsageError(
                "--nnodes above 1 needs --rdzv_endpoint HOST:PORT (node 0's address, the same on every node)"
            )
        cmd += ["--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank), "--rdzv_endpoint", args.rdzv_endpoint]
    else:
        cmd += ["--standalone"]
    return cmd + [
        "--nproc_per_node",
        str(args.gpus),
        "--max_restarts",
        "0",  # a rank that fails fails the run: a restart would train from step 0 again
        "--signals_to_handle",
        "SIGTERM,SIGHUP,SIGQUIT",
        "-m",
        "stages.train_lora",
        *argv,
    ]


class AgreedStop(Cancelled):
    """Every rank of the group agreed to stop after the same step (the loop raises it)."""


class GroupEvents(EventWriter):
    """The launcher's writer: its start and, only when rank 0 wrote no final event (it died, or was
    stopped because another rank did), its own done or error."""

    def __init__(self, stage: str, path=None, run: str = "") -> None:
        super().__init__(stage, path, run)
        self._reader: EventReader | None = None
        self._final: dict | None = None
        self._armed = False  # a run of one process writes as any stage does

    def arm(self) -> None:
        """From now on the group's rank 0 writes the final event, and this writer only in its place."""
        self._reader = EventReader(self.path, self.path.stat().st_size) if self.path else None
        self._armed = True

    def group_final(self) -> dict | None:
        if self._reader is not None and self._final is None:
            self._final = next(
                (e for e in reversed(self._reader.read()) if e["kind"] in FINAL_KINDS and e.get("stage") == self.stage),
                None,
            )
        return self._final

    def emit(self, kind: str, **fields):
        if (
            self._armed
            and kind in FINAL_KINDS
            and (self.group_final() is not None or (self.path is None and kind == "done"))
        ):
            return {}  # rank 0 said it (alone at a terminal, rank 0's done line is already on screen)
        return super().emit(kind, **fields)


class WorkerEvents(EventWriter):
    """A rank's writer: rank 0 writes the run's events but its start (the launcher wrote it); the
    other ranks write none."""

    def __init__(self, stage: str, path=None, run: str = "", rank: int = 0) -> None:
        super().__init__(stage, path if rank == 0 else None, run)
        self.rank = rank
        self.final_to_launcher = False

    def emit(self, kind: str, **fields):
        if kind == "start" or self.rank != 0 or (self.final_to_launcher and kind in FINAL_KINDS):
            return {}
        return super().emit(kind, **fields)


def as_member(rank: int, events: EventWriter, body):
    """One rank's run of ``body()``, ended so that the group ends with it, never waiting on a rank gone.

    - A stop the group agreed on ends a rank above 0 well: rank 0 reports the cancel, and torchrun must
      not stop rank 0 while it writes the checkpoint.
    - A Ctrl-C before the group could agree (still setting up) ends any rank with 130, so torchrun stops
      the others: a rank waiting for it in the rendezvous or a collective would wait out the timeout.
    - Any other failure but the user's (an ActionableError) is left to the launcher, which names the rank
      that failed first: a rank whose peer died fails too ("Connection closed by peer"), and is not the cause.
    """
    try:
        return body()
    except AgreedStop:
        if rank != 0:
            return {}
        raise
    except (ActionableError, Cancelled, KeyboardInterrupt):
        raise
    except Exception:
        if isinstance(events, WorkerEvents):
            events.final_to_launcher = True
        time.sleep(PEER_GRACE_S)  # torchrun's SIGTERM (default action in a group) ends this if a peer died
        raise


def worker_events(stage: str) -> EventWriter | None:
    rank = worker_rank()
    if rank is None:
        return None
    env = EventWriter.from_env(stage)
    env.close()
    return WorkerEvents(stage, env.path, env.run, rank)


def as_rank(rank: int) -> None:
    """A rank's process: Ctrl-C is a cancel again (torchrun passed on its "ignore SIGINT"),
    and every line it prints starts with ``[rank N]``: the launcher keeps each rank's last one."""
    signal.signal(signal.SIGINT, _interrupt_once)
    sys.stdout = _Prefixed(sys.stdout, f"[rank {rank}] ")
    sys.stderr = _Prefixed(sys.stderr, f"[rank {rank}] ")


def _interrupt_once(*_) -> None:
    # The launcher repeats SIGINT until the group ends: the first one cancels, the rest must not break
    # the cancel's own clean-up (the loop's StopFlag, once installed, takes them as flags too).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


class _Prefixed(io.TextIOBase):
    def __init__(self, stream, prefix: str) -> None:
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            out.append((self.prefix if self.at_start else "") + piece)
            self.at_start = piece.endswith("\n")
        self.stream.write("".join(out))
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()


class Watch:
    """Reads the group's output: each rank's last line, and which rank torchrun blames."""

    def __init__(self) -> None:
        self.last: dict[int, str] = {}
        self.root: int | None = None
        self.exitcode: int | None = None
        self._in_root = False

    def feed(self, line: str) -> bool:
        """Take one line; True when it belongs in the run's log."""
        if m := RANK_LINE.match(line):
            if m.group(2).strip():
                self.last[int(m.group(1))] = m.group(2).strip()
            return not QUIET.match(line)
        if "Root Cause" in line:
            self._in_root = True
        elif self._in_root and self.root is None and (m := re.match(r"\s*rank\s*:\s*(\d+)", line)):
            self.root = int(m.group(1))
        elif self._in_root and self.exitcode is None and (m := re.match(r"\s*exitcode\s*:\s*(-?\d+)", line)):
            self.exitcode = int(m.group(1))
        return True

    def failure(self, code: int) -> str:
        if self.root is None:
            return f"the training group stopped (torchrun exit code {code}) before rank 0 could say why"
        how = (
            f"killed by {signal.Signals(-self.exitcode).name}"
            if self.exitcode is not None and self.exitcode < 0 and -self.exitcode in signal.valid_signals()
            else f"exit code {self.exitcode}"
        )
        last = self.last.get(self.root)
        return f"rank {self.root} stopped ({how}); its last log line: {last if last else '(none)'}"


def run(args, argv: list[str], events: GroupEvents) -> dict:
    """Run the group to its end; the done event's summary is rank 0's, so this returns nothing new."""
    cmd = torchrun_command(args, argv)
    events.log(f"training on {args.gpus} ranks per node x {args.nnodes} node(s): {shlex.join(cmd[1:])}")
    cancel = _Cancel()
    # Our handler before torchrun starts, so a Ctrl-C while it starts is kept (torchrun ignores it itself)
    previous = signal.signal(signal.SIGINT, cancel.ask)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    cancel.started(proc)
    watch = Watch()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if watch.feed(line):
                print(line, flush=True)
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    final = events.group_final()
    if final is not None:
        if final["kind"] == "done" and final.get("status") == "cancelled":
            raise Cancelled()
        if final["kind"] == "error":
            raise StageError(str(final.get("message")), hint=final.get("hint"))
        return {}
    if code == 0:
        return {}
    if cancel.asked:
        raise Cancelled()
    raise StageError(watch.failure(code), hint=f"every rank's output is in the run's log; {_resume_hint(args)}")


def _resume_hint(args) -> str:
    return f"continue from the last checkpoint with --resume (any number of --gpus; output {Path(args.output)})"


class _Cancel:
    """A Ctrl-C, kept until torchrun has started, then passed on to the ranks (once: a second sender
    would only repeat what the first one sends)."""

    def __init__(self) -> None:
        self.asked, self.proc, self.sent = False, None, False

    def ask(self, *_) -> None:
        self.asked = True
        self._send()

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._send()

    def _send(self) -> None:
        if self.asked and self.proc is not None and not self.sent:
            self.sent = True
            threading.Thread(target=_interrupt_ranks, args=(self.proc,), daemon=True).start()


def _interrupt_ranks(proc: subprocess.Popen) -> None:
    """SIGINT to every rank (torchrun's children, each in a session of its own), not to torchrun, again
    each half second until the group has ended: a rank torchrun is still starting may not listen yet,
    and a rank that already has the cancel takes the repeats as the same one (see ``as_rank``)."""
    import psutil

    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child.pid, signal.SIGINT)
        time.sleep(0.5)
