"""A model from the Hugging Face Hub, through huggingface_hub and the user's HF cache.

The cache (HF_HUB_CACHE, by default ~/.cache/huggingface/hub) is shared with every other HF tool: a
model already there is not downloaded again, and is found offline (HF_HUB_OFFLINE=1, or no network).
``snapshot_download`` resumes a cut transfer, checks sizes and uses hf_xet when installed; files it
fetched are then checked against the Hub's checksums (``verify_repo_checksums``). Progress comes from
its progress-bar hook (``tqdm_class``). Nothing here deletes anything in the cache.
"""

from __future__ import annotations

import errno
import fnmatch
import importlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import StageError
from core.events import EventWriter
from core.fsutil import DiskSpaceError, check_free_space
from stages.weights.hf_model import CARRIED

# The weights and every file a model folder carries along (hf_model.CARRIED): nothing else of a repo.
WANTED = ("*.safetensors", "*.safetensors.index.json", *CARRIED)
log = logging.getLogger("stages.download")


@dataclass(frozen=True)
class Snapshot:
    path: Path  # the cache's snapshot directory (symlinks to its blobs)
    commit: str | None
    downloaded: int  # bytes fetched by this run


def wanted(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in WANTED)


@dataclass(frozen=True)
class Earlier:
    """A model directory an earlier w4tui downloaded itself (before the cache was used): its files are
    taken as they are when they are that revision's, so nobody downloads 15 GB again."""

    path: Path
    revision: str
    commit: str | None
    sizes: dict[str, int]


def fetch(repo: str, revision: str, events: EventWriter, earlier: Earlier | None = None) -> Snapshot:
    """The model's files in the cache, downloading those not there yet."""
    from huggingface_hub import HfApi, constants, snapshot_download, try_to_load_from_cache  # heavy: only to download

    # Its warnings (a transfer retried) go to the log with ours, not to stderr: that is for the one-line error.
    logging.getLogger("huggingface_hub").handlers.clear()
    api = HfApi()
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except (OSError, *_transport_errors()) as exc:
        _refuse_access_errors(exc, repo, revision)
        if earlier and earlier.revision == revision:
            log.info(
                "%s: the Hub cannot be asked (%s); using %s as downloaded before", repo, _first_line(exc), earlier.path
            )
            return Snapshot(earlier.path, earlier.commit, 0)
        return cached(repo, revision, exc)
    sizes = {s.rfilename: s.lfs.size if s.lfs else s.size or 0 for s in info.siblings or [] if wanted(s.rfilename)}
    check_names(repo, sizes)
    if earlier and earlier.commit == info.sha and earlier.sizes == sizes:
        log.info("%s at %s is already whole in %s (downloaded before): nothing to fetch", repo, info.sha, earlier.path)
        return Snapshot(earlier.path, info.sha, 0)
    have = {n for n in sizes if isinstance(try_to_load_from_cache(repo, n, revision=info.sha), str)}
    missing = sum(size for name, size in sizes.items() if name not in have)
    if missing:
        check_free_space(
            constants.HF_HUB_CACHE,
            missing + (1 << 20),
            f"{repo} ({len(sizes) - len(have)} files) in the Hugging Face cache",
        )
    progress = HubProgress(events, sum(sizes.values()), sum(sizes[n] for n in have))
    try:
        # By branch name, not info.sha, so the cache records the branch (refs/main) for offline use.
        path = Path(
            snapshot_download(repo, revision=revision, allow_patterns=sorted(sizes), tqdm_class=progress.bar_class())
        )
    except (OSError, *_transport_errors()) as exc:
        _refuse_access_errors(exc, repo, revision)
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(
                f"{constants.HF_HUB_CACHE}: disk full while downloading {repo}; free some space and run again"
            ) from None
        raise StageError(f"{repo}: download interrupted ({_first_line(exc)})", hint="run again to continue") from None
    progress.emit(force=True)
    if missing:
        _verify(api, repo, path, set(sizes))
    return Snapshot(path, path.name, missing)


def cached(repo: str, revision: str, cause: BaseException) -> Snapshot:
    """The snapshot of ``revision`` already in the cache, when the Hub cannot be asked."""
    from huggingface_hub import constants, try_to_load_from_cache  # as above

    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    if not isinstance(found, str):
        where = f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) either"
        if constants.HF_HUB_OFFLINE:
            raise StageError(
                f"HF_HUB_OFFLINE is set and {repo} ({revision}) is {where}",
                hint="unset HF_HUB_OFFLINE to download it, or give a local directory as --repo",
            )
        raise StageError(
            f"cannot reach the Hub for {repo}: {_first_line(cause)}; {where}",
            hint="check the network, HF_ENDPOINT, or give a local directory as --repo",
        )
    path = Path(found).parent
    names = {p.name: p.stat().st_size for p in path.iterdir() if wanted(p.name) and p.exists()}
    check_names(repo, names, path)
    log.info("%s (%s) found in the Hugging Face cache: %s", repo, revision, path)
    return Snapshot(path, path.name, 0)


def check_names(repo: str, files: dict[str, int], directory: Path | None = None) -> None:
    """A Hugging Face safetensors model, whole (every shard its index names)."""
    if "config.json" not in files:
        raise StageError(f"{repo}: no config.json; this is not a Hugging Face model")
    if not any(name.endswith(".safetensors") for name in files):
        raise StageError(f"{repo}: no .safetensors weights (only safetensors models are supported)")
    if directory is not None and (index := directory / "model.safetensors.index.json").exists():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()) - set(files))
        if shards:
            raise StageError(
                f"{directory}: {shards[0]} is missing ({len(shards)} of the shards its index names)",
                hint="run the download again with the network on, or copy the missing shards there",
            )


def _verify(api, repo: str, path: Path, names: set[str]) -> None:
    result = api.verify_repo_checksums(repo, revision=path.name)
    bad = [m for m in result.mismatches if m["path"] in names]
    if bad:  # the blob, not the snapshot's link to it: the library would link the same blob again
        raise StageError(
            f"{(path / bad[0]['path']).resolve()}: {bad[0]['algorithm']} checksum of {bad[0]['path']} differs "
            "from the Hub's",
            hint="delete that file from the Hugging Face cache and run again",
        )


def _refuse_access_errors(exc: BaseException, repo: str, revision: str) -> None:
    """The errors a cached copy must not hide: the repo or the revision does not exist, or is gated."""
    from huggingface_hub.errors import (  # as above
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        raise StageError(f"{repo} is gated", hint="accept its licence on the Hub and set HF_TOKEN") from None
    if isinstance(exc, RepositoryNotFoundError):
        raise StageError(f"{repo}: no such model on the Hub (or it is private: set HF_TOKEN)") from None
    if isinstance(exc, RevisionNotFoundError):
        raise StageError(f"{repo}: no revision '{revision}'", hint="check [model] revision in config.toml") from None


class HubProgress:
    """Byte progress events from huggingface_hub's progress bars (its ``tqdm_class`` hook), a few a
    second. Its byte bars all count the bytes of this snapshot; the furthest one is reported."""

    def __init__(self, events: EventWriter, total: int, done: int) -> None:
        self.events, self.total, self.base = events, total, done
        self.bars: list[_Bar] = []
        self.lock = threading.Lock()  # files download in several threads
        self.last = 0.0

    def bar_class(self) -> type[_Bar]:
        return type("Bar", (_Bar,), {"progress": self})

    def emit(self, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not force and now - self.last < 0.25:
                return
            self.last = now
            got = max((bar.n for bar in self.bars if bar.unit == "B"), default=0)
            done = self.total if force else min(self.total, self.base + got)
            self.events.progress(done, self.total, "bytes")


class _Bar:
    """What huggingface_hub calls on a tqdm bar; nothing is drawn."""

    progress: HubProgress

    def __init__(self, *args, total=None, initial=0, unit="it", desc="", **kwargs) -> None:
        self.total, self.n, self.unit, self.desc = total, initial or 0, unit, desc
        with self.progress.lock:
            self.progress.bars.append(self)

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        self.progress.emit()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def close(self) -> None:
        pass

    def refresh(self, *args, **kwargs) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description_str = set_description

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    @property
    def format_dict(self) -> dict:
        return {"n": self.n, "total": self.total, "rate": None}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors of whichever HTTP library this huggingface_hub uses (requests' are OSErrors)."""
    errors: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
