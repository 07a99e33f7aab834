"""Download the base model: safetensors, config, tokenizer and generation files only.

    python -m stages.download --repo Qwen/Qwen2.5-Coder-7B-Instruct --revision main --output models/Qwen2.5-Coder-7B-Instruct

Resumable: each file streams into ``<output>/.download/<name>.part`` and continues with an HTTP Range
request after an interruption; a file gets its real name only once complete and checked (size, and
sha256 for LFS files). ``--repo`` may also be a local directory, whose files are copied the same way.
The Hub endpoint follows ``HF_ENDPOINT`` and the token ``HF_TOKEN``, as with every Hugging Face tool.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.common.errors import StageError
from stages.common.stage import StageArgumentParser, run_main
from w4tui.events import EventWriter
from w4tui.fsutil import check_free_space, fsync_dir

WANTED = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
)
CHUNK = 1 << 20
MARKER = ".w4tui-download.json"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files carry one; small git files do not


def build_parser() -> StageArgumentParser:
    parser = StageArgumentParser(prog="download", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True, help="Hugging Face repo id, or a local model directory")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (Hub only)")
    parser.add_argument("--output", required=True, type=Path, help="directory to place the model in")
    return parser


def wanted(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in WANTED)


def body(args, events: EventWriter) -> dict:
    output: Path = args.output.resolve()
    local = Path(args.repo).expanduser()
    if local.is_dir():
        files, commit = _local_files(local.resolve()), None
        fetch = lambda f, part, start: _copy_range(local / f.name, part, start)  # noqa: E731
    else:
        if args.repo.startswith((".", "/", "~")):
            raise StageError(f"{args.repo}: no such directory", hint="give a local model directory or a Hub repo id")
        files, commit = _hub_files(args.repo, args.revision)
        fetch = lambda f, part, start: _http_range(args.repo, commit, f.name, part, start)  # noqa: E731
    if not any(f.name == "config.json" for f in files):
        raise StageError(f"{args.repo}: no config.json; this is not a Hugging Face model")
    if not any(f.name.endswith(".safetensors") for f in files):
        raise StageError(f"{args.repo}: no .safetensors weights (only safetensors models are supported)")
    total = sum(f.size for f in files)
    if local.is_dir() and local.resolve() == output:
        events.artifact(output, "model", source=args.repo, bytes=total)
        return {"files": len(files), "bytes": total, "downloaded": 0}

    staging = output / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if not _complete(output / f.name, f)]
    have = sum(f.size for f in files if f not in todo) + sum(_size(staging / (f.name + ".part")) for f in todo)
    check_free_space(output, total - have + CHUNK, f"{args.repo} ({len(todo)} files)")
    progress = _Progress(events, total, have)
    for f in todo:
        _fetch_file(f, output, staging, fetch, progress)
    shutil.rmtree(staging, ignore_errors=True)
    (output / MARKER).write_text(
        json.dumps(
            {"repo": args.repo, "revision": args.revision, "commit": commit, "files": {f.name: f.size for f in files}},
            indent=2,
        )
        + "\n"
    )
    progress.emit(force=True)
    events.artifact(output, "model", source=args.repo, revision=args.revision, commit=commit, bytes=total)
    return {"files": len(files), "bytes": total, "downloaded": total - have}


def _fetch_file(f: RemoteFile, output: Path, staging: Path, fetch, progress: _Progress) -> None:
    part = staging / (f.name + ".part")
    start = _size(part)
    if start > f.size:  # stale partial from another revision
        part.unlink()
        start = 0
    if start < f.size:
        for n in fetch(f, part, start):
            progress.add(n, f.name)
    got = _size(part)
    if got != f.size:
        raise StageError(f"{f.name}: got {got} bytes, expected {f.size}; run again to resume")
    if f.sha256 and _sha256(part) != f.sha256:
        part.unlink()
        raise StageError(f"{f.name}: sha256 mismatch (corrupt download, removed); run again to fetch it anew")
    os.replace(part, output / f.name)
    fsync_dir(output)


def _complete(path: Path, f: RemoteFile) -> bool:
    return path.is_file() and path.stat().st_size == f.size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """Byte progress, at most a few events a second however small the chunks are."""

    def __init__(self, events: EventWriter, total: int, done: int) -> None:
        self.events, self.total, self.done, self.file, self.last = events, total, done, "", 0.0

    def add(self, n: int, name: str) -> None:
        self.done += n
        self.file = name
        self.emit()

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= 0.25:
            self.last = now
            self.events.progress(self.done, self.total, "bytes", message=self.file or None)


def _local_files(directory: Path) -> list[RemoteFile]:
    return [
        RemoteFile(p.name, p.stat().st_size, None)
        for p in sorted(directory.iterdir())
        if p.is_file() and wanted(p.name)
    ]


def _copy_range(source: Path, part: Path, start: int) -> Iterator[int]:
    with open(source, "rb") as src, open(part, "ab") as dst:
        src.seek(start)
        while chunk := src.read(CHUNK * 8):
            dst.write(chunk)
            yield len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def _hub_files(repo: str, revision: str) -> tuple[list[RemoteFile], str | None]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise StageError(f"{repo} is gated", hint="accept its licence on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise StageError(f"{repo}: no such model on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise StageError(f"{repo}: no revision '{revision}'", hint="check [model] revision in config.toml") from None
    except (HfHubHTTPError, *_transport_errors()) as exc:
        raise StageError(
            f"cannot reach the Hub for {repo}: {_first_line(exc)}",
            hint="check the network, HF_ENDPOINT, or give a local directory as --repo",
        ) from None
    files = [
        RemoteFile(s.rfilename, s.lfs.size if s.lfs else (s.size or 0), s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
        if wanted(s.rfilename)
    ]
    return files, info.sha


def _http_range(repo: str, commit: str | None, name: str, part: Path, start: int) -> Iterator[int]:
    import httpx
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, name, revision=commit)
    headers = build_hf_headers()
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
            if response.status_code not in (200, 206):
                raise StageError(f"{name}: the Hub answered HTTP {response.status_code}; run again to resume")
            mode = "ab" if response.status_code == 206 else "wb"  # 200: the server ignored Range
            with open(part, mode) as fh:
                if mode == "wb" and start:
                    yield -start
                for chunk in response.iter_bytes():  # as received, so a cut keeps every byte
                    fh.write(chunk)
                    yield len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
    except httpx.HTTPError as exc:
        raise StageError(f"{name}: download interrupted ({_first_line(exc)}); run again to resume") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors of whichever HTTP library this huggingface_hub uses (requests' are OSErrors)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("download", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
