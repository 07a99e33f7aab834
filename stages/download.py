"""Download the base model: safetensors, config, tokenizer and generation files only.

    python -m stages.download --repo Qwen/Qwen2.5-Coder-7B-Instruct --revision main --output models/Qwen2.5-Coder-7B-Instruct

The files come through huggingface_hub into the user's Hugging Face cache (HF_HUB_CACHE, by default
~/.cache/huggingface/hub), shared with every other HF tool: a model already there is not downloaded
again, and is found offline too (see stages/weights/hub.py). ``--output`` then gets the files as hard
links to the cache's blobs, copies when the cache is on another file system: one copy on disk, a
model directory the later stages and the config's ``[model] dir`` can rely on, and a cache the user
may prune without breaking it. ``--repo`` may also be a local directory, whose files are copied.
The Hub endpoint follows ``HF_ENDPOINT`` and the token ``HF_TOKEN``, as with every Hugging Face tool.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import parsers
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import DiskSpaceError, atomic_path, atomic_write_text, check_free_space
from core.parsers import StageArgumentParser
from stages.common.outputs import check_output, only_names
from stages.common.stage import run_main
from stages.weights import hub

CHUNK = 8 << 20
MARKER = ".w4tui-download.json"


def build_parser() -> StageArgumentParser:
    return parsers.download()


def body(args, events: EventWriter) -> dict:
    output: Path = args.output.resolve()
    local = Path(args.repo).expanduser()
    if not local.is_dir() and args.repo.startswith((".", "/", "~")):
        raise StageError(f"{args.repo}: no such directory", hint="give a local model directory or a Hub repo id")
    if local.is_dir() and local.resolve() == output:  # the model is already where it should be
        files = _model_files(output)
        hub.check_names(args.repo, files, output)
        events.artifact(output, "model", source=args.repo, bytes=sum(files.values()))
        return {"files": len(files), "bytes": sum(files.values()), "downloaded": 0}
    # Before any download: an --output that would replace what this stage did not write is refused.
    check_output(args.output, "dir", inputs=[local] if local.is_dir() else [], what="the model", own=_ours)
    if local.is_dir():
        source, commit, downloaded = local.resolve(), None, 0
    else:
        snapshot = hub.fetch(args.repo, args.revision, events, _earlier(output, args.repo))
        source, commit, downloaded = snapshot.path, snapshot.commit, snapshot.downloaded
    files = _model_files(source)
    hub.check_names(args.repo, files, source)
    copied = _place(source, files, output, link=not local.is_dir(), events=events)
    record = {"repo": args.repo, "revision": args.revision, "commit": commit, "source": str(source), "files": files}
    atomic_write_text(output / MARKER, json.dumps(record, indent=2) + "\n")
    total = sum(files.values())
    events.artifact(output, "model", source=args.repo, revision=args.revision, commit=commit, bytes=total)
    return {"files": len(files), "bytes": total, "downloaded": downloaded, "copied": copied}


def _model_files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if hub.wanted(p.name) and p.is_file()}


def _ours(directory: Path) -> bool:
    """Only what this stage writes: model files, its record, its unfinished temporaries (and the former
    client's .download staging)."""
    return only_names(
        directory,
        lambda n: hub.wanted(n) or n in (MARKER, ".download") or (n.startswith(".") and n.endswith(".partial")),
    )


def _place(source: Path, files: dict[str, int], output: Path, link: bool, events: EventWriter) -> int:
    """Give each file its final name in ``output`` only once complete: a hard link to the cache's blob
    when ``link``, else (or on another file system) a copy. Files already in place are kept. Returns
    the bytes copied."""
    previous = _marker(output)
    todo = [name for name in files if not _same(source / name, output / name, previous)]
    if todo and not link:
        check_free_space(output, sum(files[n] for n in todo) + CHUNK, f"{len(todo)} model files")
    progress = _CopyProgress(events, sum(files[n] for n in todo))
    copied = 0
    for name in todo:
        blob = (source / name).resolve()  # the cache's blob behind the snapshot's symlink
        with atomic_path(output / name) as tmp:
            if link and _hard_link(blob, tmp):
                continue
            check_free_space(output, files[name] + CHUNK, name)
            _copy(blob, tmp, progress)
            copied += files[name]
    if copied:
        progress.emit(force=True)
    return copied


def _same(source: Path, target: Path, previous: dict) -> bool:
    try:
        if os.path.samefile(source, target):
            return True
        copied_from = previous.get("source") == str(source.parent) and previous.get("files", {}).get(source.name)
        return copied_from == target.stat().st_size == source.stat().st_size
    except OSError:
        return False


def _hard_link(blob: Path, target: Path) -> bool:
    try:
        os.link(blob, target)
        return True
    except OSError:  # another file system, or one without hard links: copy instead
        return False


def _copy(source: Path, target: Path, progress: _CopyProgress) -> None:
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                progress.add(len(chunk))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskSpaceError(
            f"{target.parent.parent}: disk full while copying {source.name}; free some space and run again"
        ) from None


def _earlier(output: Path, repo: str) -> hub.Earlier | None:
    """What the resumable client before the HF cache left in ``output``, when it finished and is intact."""
    record = _marker(output)
    sizes = record.get("files")
    if record.get("repo") != repo or record.get("source", str(output)) != str(output) or not isinstance(sizes, dict):
        return None
    if any(not (output / name).is_file() or (output / name).stat().st_size != size for name, size in sizes.items()):
        return None
    return hub.Earlier(output, record.get("revision", ""), record.get("commit"), sizes)


def _marker(output: Path) -> dict:
    try:
        return json.loads((output / MARKER).read_text())
    except (OSError, ValueError):
        return {}


class _CopyProgress:
    """Byte progress of placing the files, at most a few events a second."""

    def __init__(self, events: EventWriter, total: int) -> None:
        self.events, self.total, self.done, self.last = events, total, 0, 0.0

    def add(self, n: int) -> None:
        self.done += n
        self.emit()

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= 0.25:
            self.last = now
            self.events.progress(self.done, self.total, "bytes", message="placing files")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("download", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
