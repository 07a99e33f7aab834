"""The check every stage makes before it writes its output: it never removes or replaces what it did not make.

A typo such as ``--output outputs`` (for ``outputs/merged/x``) must not swap the whole outputs tree for one
model, and ``--output x.gguf`` naming a directory must not delete it. So an output is refused when it is a
root a person keeps other things in (``/``, the home directory, the config's directory, the current
directory, a ``[paths]`` root), an input or a directory holding one, an existing directory with content
the stage did not write, an existing file the stage did not write, or a symbolic link; and before any work
starts, its directory must be a directory and writable (so a run never trains for hours and then fails
to save). Every refusal is one ``StageError`` line naming the path and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from core.config import Config, load_config
from core.errors import StageError


def check_output(
    path: Path,
    kind: str,
    *,
    inputs: Iterable[Path | None] = (),
    own: Callable[[Path], bool],
    what: str = "the output",
    flag: str = "--output",
    config: Config | None = None,
) -> None:
    """Refuse ``path`` as the ``kind`` ("file" or "dir") output unless writing it can only replace what this
    stage made before (``own(path)`` says whether an existing file or directory is such). Checks only:
    the caller writes atomically afterwards (core.fsutil.atomic_path)."""
    shown = f"{flag} {path}"
    given = Path(os.path.abspath(Path(path).expanduser()))
    if given.is_symlink():
        raise StageError(
            f"{shown}: is a symbolic link (to {os.readlink(given)}); writing would replace the link",
            hint="give the real path",
        )
    target = given.resolve()
    config = config or load_config(None)
    protected = _protected(config)
    for root, name in protected:
        if target == root:
            raise StageError(
                f"{shown}: that is {name}; {what} would replace everything in it",
                hint=f"give a new path inside it, e.g. {_example(root, kind)}",
            )
    for root, name in protected:
        if target.exists() and _inside(root, target):
            raise StageError(f"{shown}: holds {name} ({root}); {what} would replace it", hint="give a new path")
    for source in (Path(p).resolve() for p in inputs if p is not None):
        if target == source or _inside(source, target):
            raise StageError(
                f"{shown}: {'is' if target == source else 'holds'} the input {source}; {what} would replace it",
                hint="give a new path",
            )
    _check_parent(shown, target)
    if kind == "file":
        if target.is_dir():
            raise StageError(f"{shown}: is an existing directory; {what} is a file", hint="give a new file name")
        if target.exists() and not own(target):
            raise StageError(
                f"{shown}: a file w4tui did not write is already there; {what} would replace it",
                hint="move that file away, or choose another name",
            )
    elif target.exists():
        if not target.is_dir():
            raise StageError(f"{shown}: is an existing file; {what} is a directory", hint="give a new directory")
        entries = sorted(p.name for p in target.iterdir())
        if entries and not own(target):
            listed = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise StageError(
                f"{shown}: is a directory with other content ({listed}); {what} would replace it",
                hint="give a new directory (or an empty one)",
            )


def only_names(directory: Path, allowed: Callable[[str], bool]) -> bool:
    """True when every entry of ``directory`` is a name ``allowed`` accepts (what a stage itself writes)."""
    return all(allowed(p.name) for p in directory.iterdir())


def _protected(config: Config) -> list[tuple[Path, str]]:
    roots = [(Path("/"), "the file system root"), (config.base_dir, f"the config's directory ({config.file.name})")]
    for where, name in ((Path.home, "your home directory"), (Path.cwd, "the current directory")):
        try:
            roots.append((where(), name))
        except (OSError, RuntimeError):  # no HOME, or a current directory that was deleted
            pass
    roots += [
        (getattr(config.paths, key), f"[paths] {key}") for key in ("outputs", "runs", "state", "data", "incoming")
    ]
    return [(root.resolve(), name) for root, name in roots]


def _inside(inner: Path, outer: Path) -> bool:
    return outer in inner.parents


def _example(root: Path, kind: str) -> str:
    return str(root / ("merged/NAME" if kind == "dir" else "gguf/NAME.gguf"))


def _check_parent(shown: str, target: Path) -> None:
    """The nearest existing directory above ``target`` must be a directory this process can write in."""
    probe = target.parent
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise StageError(
            f"{shown}: {probe} is a file, not a directory",
            hint="fix the path (or the [paths] entry in the config that points there)",
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".w4tui-write-test-"):
            pass
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else exc.strerror or exc.__class__.__name__
        raise StageError(
            f"{shown}: cannot write in {probe} ({reason})",
            hint="choose a directory you can write to, or fix its permissions",
        ) from None
