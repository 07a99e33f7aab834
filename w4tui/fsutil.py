"""Small file-system helpers shared by the app and the stages (standard library only).

Artifacts are written to a temporary name in the same directory, fsynced, then renamed, so a
crash or Ctrl-C never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class DiskSpaceError(Exception):
    """Not enough free space for an output; the message says how much is missing and where."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_free_space(directory: str | os.PathLike[str], needed: int, what: str = "the output") -> None:
    """Raise DiskSpaceError unless ``directory`` (or its nearest existing parent) has ``needed`` bytes free."""
    probe = Path(directory).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(
            f"{probe}: {human_bytes(free)} free, {what} needs {human_bytes(needed)}; "
            f"free {human_bytes(needed - free)} or choose another directory"
        )


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``,
    on failure removed. Works for a file or a directory written at the yielded path."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling directory keeps the final name (tools that look at suffixes still work).
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    target = tmp_parent / final.name
    try:
        yield target
        _fsync_tree(target)
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync_file(child)
        fsync_dir(path)
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
