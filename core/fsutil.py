"""Small file-system helpers shared by the app and the stages (standard library only).

Artifacts are written to a temporary name in the same directory, fsynced, then renamed, so a
crash or Ctrl-C never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ActionableError
from .units import size


class DiskSpaceError(ActionableError):
    """Not enough free space for an output; the message says how much is missing and where (exit 1)."""


def check_free_space(directory: str | os.PathLike[str], needed: int, what: str = "the output") -> None:
    """Raise DiskSpaceError unless ``directory`` (or its nearest existing parent) has ``needed`` bytes free."""
    probe = Path(directory).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(
            f"{probe}: {size(free)} free, {what} needs {size(needed)}; "
            f"free {size(needed - free)} or choose another directory"
        )


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


PARTIAL = ".partial"
LOCK = ".writer.lock"  # inside a partial: flock-ed by its writer for as long as it lives


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``,
    on failure removed. Works for a file or a directory written at the yielded path.

    What a killed writer of the same output left (its partial, or the old copy it was swapping out)
    is reclaimed first; a disk that fills while writing is a DiskSpaceError naming the output."""
    final = Path(path)
    made = _missing_parents(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final.parent, final.name)
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not old.is_symlink():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # killed between the two renames below: the old copy is the only one, put it back
            os.replace(old, final)
    # A hidden sibling directory keeps the final name (tools that look at suffixes still work).
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=PARTIAL, dir=final.parent))
    lock = _hold_lock(tmp_parent)
    target = tmp_parent / final.name
    try:
        yield target
        _fsync_tree(target)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
        fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp_parent, ignore_errors=True)
        for directory in made:  # a failed write leaves no empty folders behind either
            with contextlib.suppress(OSError):
                directory.rmdir()
        if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskSpaceError(
            f"{final.parent}: disk full while writing {final.name} ({exc.strerror}); the partial "
            "output was removed; free some space and run again"
        ) from None
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
        os.close(lock)


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary directory beside ``path``, named and locked as a partial of it, removed on exit; one
    that a killed writer left is reclaimed by the next writer of ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=PARTIAL, dir=final.parent))
    lock = _hold_lock(scratch)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(lock)


def _missing_parents(path: Path) -> list[Path]:
    """The directories above ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def remove_stale_partials(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove the partial outputs in ``directory`` (of ``name`` only, when given) whose writer is gone:
    their lock is free. A partial without a lock, or one whose lock is held, is left alone."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        label = entry.name
        if not (label.startswith(".") and label.endswith(PARTIAL)) or entry.is_symlink() or not entry.is_dir():
            continue
        if name is not None and label[1 : -len(PARTIAL)].rsplit(".", 1)[0] != name:
            continue
        if _writer_gone(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _hold_lock(partial: Path) -> int:
    """Lock a new partial for as long as this process lives (the kernel drops a dead process's flock).
    Locked under another name, then renamed: no moment shows the lock file unlocked."""
    fd = os.open(partial / (LOCK + ".new"), os.O_RDWR | os.O_CREAT, 0o644)
    with contextlib.suppress(OSError):  # a file system without locks: the partial is then never reclaimed
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.replace(partial / (LOCK + ".new"), partial / LOCK)
    return fd


def _writer_gone(partial: Path) -> bool:
    try:
        fd = os.open(partial / LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock just taken


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


def move_aside(path: str | os.PathLike[str], suffix: str) -> Path:
    """Rename a damaged SQLite file (and its -wal/-shm) to ``<name><suffix>``, or ``<suffix>-2`` ... when
    an older one is there: none is ever overwritten or deleted. The WAL keeps its pairing, so SQLite can
    still read the copy; the database goes last, so a crash in between leaves it where it was."""
    path = Path(path)
    n = 1
    while (aside := path.with_name(path.name + suffix + (f"-{n}" if n > 1 else ""))).exists():
        n += 1
    for extra in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{extra}", f"{aside}{extra}")
    return aside
