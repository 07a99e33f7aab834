"""The eval's scratch space: temporary quantized GGUFs and the reference logits, in one hidden
directory beside the build that is removed when the eval ends (success, failure, Ctrl-C, SIGTERM).

The reference (F16) logits of every scored token are kept exactly, float32, in a file mapped into
memory: 4096 tokens of a 152k vocabulary are 2.5 GB, more than should sit in RAM next to a 7B model.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.errors import StageError
from core.fsutil import check_free_space
from core.gguf_header import NotGGUF, read_info

PREFIX = ".w4tui-eval-"


@contextlib.contextmanager
def scratch_dir(beside: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=beside))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Reference:
    """Logits of the reference model at the scored positions of every sample, in sample order."""

    def __init__(self, directory: Path, rows_per_sample: list[int], vocab: int) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(rows_per_sample)]).astype(np.int64)
        total = int(self.offsets[-1])
        check_free_space(directory, total * vocab * 4 + (64 << 20), "the reference logits")
        self.logits = np.lib.format.open_memmap(
            directory / "reference.npy", mode="w+", dtype=np.float32, shape=(max(total, 1), vocab)
        )

    def put(self, index: int, logits: np.ndarray) -> None:
        self.logits[self.offsets[index] : self.offsets[index + 1]] = logits

    def get(self, index: int) -> np.ndarray:
        return self.logits[self.offsets[index] : self.offsets[index + 1]]


def quantize(command: list[str], source: Path, out: Path, qtype: str, threads: int) -> None:
    """Run llama-quantize (or the binding's stand-in for it) as a child; Ctrl-C stops the child too."""
    args = command + [str(source), str(out), qtype] + ([str(threads)] if threads > 0 else [])
    tail: deque[str] = deque(maxlen=20)
    # stdin stays open while we live: the binding's child stops when it reads EOF (we were killed)
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            tail.append(line.strip())
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.stdin.close()  # type: ignore[union-attr]
    made = None
    with contextlib.suppress(OSError, NotGGUF):
        made = read_info(out, tensors=False).file_type
    if rc != 0 or made != qtype:
        reason = next(
            (t for t in reversed(tail) if "error" in t.lower() or "failed" in t.lower()), tail[-1] if tail else ""
        )
        raise StageError(
            f"quantizing to {qtype} failed (exit {rc}, wrote {made}): {reason[:200]}",
            hint="its output is in the run's output.log",
        )
