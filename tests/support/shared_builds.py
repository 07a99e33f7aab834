"""Expensive read-only builds (the tiny model, its GGUFs) made once per test run, whatever the number of
pytest-xdist workers: the first worker that asks builds it under a file lock in the run's shared temp dir,
the others wait for it and reuse it. Run plainly (no xdist), the same code builds it once in the session.

A test only reads what it gets; one that must change it works on a copy (``writable_copy``); a file that
stages write beside (a GGUF: deploy's Modelfile) is handed to each test hard-linked in a folder of its own
(``linked``). After every
test, ``check_unchanged`` fails the test that changed a shared build (a file's size or mtime moved, a file
came or went), so a mutation cannot leak into the tests that run after it, on any worker.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

DONE = ".w4tui-shared.json"  # written last: a build without it was interrupted and is made again
_handed_out: dict[Path, dict[str, list[int]]] = {}  # this worker's shared builds and their fingerprints


def shared_root(tmp_path_factory) -> Path:
    """The temp dir every worker of this run sees: under xdist each worker's base temp is
    ``<run>/popen-gwN``, so the run's own dir is its parent; without xdist it is the session's base temp
    (its parent is shared with every other pytest run on the machine)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def shared_build(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(directory)`` makes its files in an empty ``directory`` and returns the path it made there;
    called once per run for ``name``; every caller gets that path."""
    root = shared_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    directory = root / name
    with FileLock(root / f"{name}.lock"):
        if not (directory / DONE).is_file():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            made = build(directory).relative_to(directory)
            (directory / DONE).write_text(json.dumps({"path": str(made), "files": fingerprint(directory)}))
    done = json.loads((directory / DONE).read_text())
    _handed_out[directory] = done["files"]
    return directory / done["path"]


def fingerprint(directory: Path) -> dict[str, list[int]]:
    return {
        str(p.relative_to(directory)): [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != DONE
    }


def check_unchanged() -> None:
    """Fail the test that just changed a shared build (see the module docstring)."""
    for directory, files in _handed_out.items():
        now = fingerprint(directory)
        if now != files:
            _handed_out[directory] = now  # named once, on the test that did it
            changed = sorted(name for name in files.keys() | now.keys() if files.get(name) != now.get(name))
            raise AssertionError(
                f"the shared build {directory} changed during this test ({', '.join(changed)}; this test, or "
                "one on another worker, wrote to it): tests only read shared builds; copy it first (writable_copy)"
            )


def linked(tmp_path_factory, path: Path) -> Path:
    """``path`` hard-linked into a fresh folder of the test's own: what a stage writes beside it (deploy's
    Modelfile next to the GGUF) lands there, not in the shared build; the file itself stays read-only."""
    out = tmp_path_factory.mktemp(path.stem) / path.name
    os.link(path, out)
    return out


def writable_copy(path: Path, dest: Path) -> Path:
    """A copy of a shared file or folder that a test may change."""
    if path.is_dir():
        shutil.copytree(path, dest)
    else:
        shutil.copy2(path, dest)
    return dest
