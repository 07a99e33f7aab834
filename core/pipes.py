"""Output into a pipe whose reader is gone (`w4tui runs | head -1`) is normal, not an error.

Python turns the write into BrokenPipeError, a traceback (or logging's "--- Logging error ---") on
stderr. Instead stdout is pointed at /dev/null from then on and the program carries on, so a stage
still finishes its work and its exit code still says how that went. Standard library only.
"""

from __future__ import annotations

import os
import sys
from typing import Any


class _Tolerant:
    """A text stream that drops its output once the reader has gone."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what is still buffered now goes nowhere, without error
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def tolerate_closed_stdout() -> None:
    """Make ``sys.stdout`` tolerate a closed pipe; only for a real file (not a test's StringIO)."""
    try:
        sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    if not isinstance(sys.stdout, _Tolerant):
        sys.stdout = _Tolerant(sys.stdout)
