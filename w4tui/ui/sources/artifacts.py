"""The artifacts pane's model: what is on disk under the outputs directory, joined with the artifact
events of the runs that made it (parent, run, quantization, where it was deployed, whether it verified).

GGUF headers are read with ``core.gguf_header`` (standard library, skips the tokenizer arrays), cached
by path, size and mtime: gguf-py's GGUFReader builds a Python object per vocabulary entry, seconds on
a Qwen file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import evaltable, units
from core.config import Config
from core.events import read_events
from core.gguf_header import NotGGUF, read_info
from core.names import EventKind
from w4tui.ui.sources.runs import RunInfo

KINDS = ("model", "adapter", "checkpoint", "merged", "gguf")


@dataclass(frozen=True)
class GGUFMeta:
    architecture: str = ""
    quantization: str = ""
    tensors: int = 0
    context_length: int | None = None
    parameters: int = 0
    name: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Artifact:
    kind: str
    path: str
    name: str
    bytes: int | None
    modified: float | None
    parent: str | None = None
    run_id: str | None = None
    quant: str | None = None
    step: int | None = None
    latest: bool = False
    deployed: tuple[str, ...] = ()  # Ollama tags made from it
    verified: bool | None = None  # the newest verify result of a tag made from it
    gguf: GGUFMeta | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())  # other fields of its artifact event
    incomplete: bool = False  # an adapter directory with checkpoints but no adapter yet (cancelled, crashed)
    eval: tuple[str, ...] = ()  # a GGUF build's eval table and size/quality bars (w4tui eval), as lines
    verify: tuple[tuple[str, str], ...] = ()  # the newest verify event of a tag made from it (its fields)


def gguf_meta(path: str | os.PathLike[str]) -> GGUFMeta:
    try:
        info = read_info(path, tensors=True)
    except (NotGGUF, OSError) as exc:
        return GGUFMeta(error=str(exc))
    arch = info.architecture
    ctx = info.kv.get(f"{arch}.context_length")
    return GGUFMeta(
        arch,
        info.file_type,
        len(info.tensors),
        int(ctx) if isinstance(ctx, int) else None,
        info.parameters,
        str(info.kv.get("general.name", "")),
    )


class ArtifactScanner:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._events: dict[str, list[dict]] = {}  # finished run id -> its artifact events
        self._gguf: dict[tuple[str, int, int], GGUFMeta] = {}
        self._evals: dict[tuple[str, int], tuple[str, ...]] = {}
        self._verify_events: dict[str, dict] = {}  # Ollama tag -> its newest verified event

    def scan(self, runs: Sequence[RunInfo]) -> list[Artifact]:
        events = self._artifact_events(runs)
        by_path = {e["path"]: e for e in events if e.get("type") in KINDS and isinstance(e.get("path"), str)}
        deployed: dict[str, list[str]] = {}
        verified: dict[str, bool] = {}
        for e in events:  # oldest first, so the newest verify result wins
            if e.get("type") == "ollama" and e.get("parent"):
                deployed.setdefault(e["parent"], []).append(str(e["path"]))
            elif e.get("type") == "verified":
                verified[str(e["path"])] = bool(e.get("passed"))
                self._verify_events[str(e["path"])] = e
        found = [
            self._artifact(kind, path, by_path.get(str(path)), deployed, verified) for kind, path in self._on_disk()
        ]
        newest: dict[str, Artifact] = {}
        for a in found:
            if (
                a.kind != "checkpoint"
                and not a.incomplete
                and (a.kind not in newest or (a.modified or 0) > (newest[a.kind].modified or 0))
            ):
                newest[a.kind] = a
        latest = {id(a) for a in newest.values()}
        found = [a if id(a) not in latest else _with(a, latest=True) for a in found]
        # Pipeline order, newest first within a kind; an adapter's checkpoints right under it, newest step first.
        tops = sorted(
            (a for a in found if a.kind != "checkpoint"),
            key=lambda a: (KINDS.index(a.kind), -(a.modified or 0), a.path),
        )
        checkpoints = sorted((a for a in found if a.kind == "checkpoint"), key=lambda a: a.name, reverse=True)
        out: list[Artifact] = []
        for a in tops:
            out.append(a)
            if a.kind == "adapter":
                out += [c for c in checkpoints if Path(c.path).parent.parent == Path(a.path)]
        return out

    # -- what is on disk ---------------------------------------------------------------------
    def _on_disk(self) -> list[tuple[str, Path]]:
        out_dir = self.config.paths.outputs
        found: list[tuple[str, Path]] = []
        model = self.config.model.dir
        if (model / "config.json").exists():
            found.append(("model", model))
        for adapter in _dirs(out_dir / "adapters"):
            found.append(("adapter", adapter))
            found.extend(("checkpoint", ckpt) for ckpt in _dirs(adapter / "checkpoints"))
        found.extend(("merged", merged) for merged in _dirs(out_dir / "merged"))
        try:
            found.extend(
                ("gguf", Path(e.path)) for e in os.scandir(out_dir / "gguf") if e.name.endswith(".gguf") and e.is_file()
            )
        except FileNotFoundError:
            pass
        return found

    def _artifact(self, kind: str, path: Path, event: dict | None, deployed: dict, verified: dict) -> Artifact:
        # The train stage writes adapter_config.json last: without it there are only checkpoints to resume
        # from, and they are all the directory holds, so they are its size.
        incomplete = kind == "adapter" and not (path / "adapter_config.json").exists()
        size = _size(path, skip="checkpoints" if kind == "adapter" and not incomplete else None)
        modified = _mtime(path)
        tags = tuple(deployed.get(str(path), ()))
        results = [verified[t] for t in tags if t in verified]
        extra = tuple(
            (k, str(v))
            for k, v in (event or {}).items()
            if k not in ("v", "time", "run", "stage", "kind", "path", "type", "parent", "quant", "step")
        )
        return Artifact(
            kind,
            str(path),
            path.name,
            size,
            modified,
            parent=(event or {}).get("parent"),
            run_id=(event or {}).get("run") or None,
            quant=(event or {}).get("quant"),
            step=(event or {}).get("step"),
            deployed=tags,
            verified=results[-1] if results else None,
            gguf=self._meta(path) if kind == "gguf" else None,
            extra=extra,
            incomplete=incomplete,
            eval=self._eval(path) if kind == "gguf" else (),
            verify=next(
                (
                    tuple((k, str(v)) for k, v in self._verify_events[t].items())
                    for t in reversed(tags)
                    if t in self._verify_events
                ),
                (),
            ),
        )

    def _eval(self, path: Path) -> tuple[str, ...]:
        report = evaltable.for_gguf(path)
        try:
            key = (str(report), report.stat().st_mtime_ns)
        except OSError:
            return ()
        if key not in self._evals:
            doc = evaltable.read(report)
            self._evals[key] = tuple(evaltable.format_table(doc) + [""] + evaltable.trade_off(doc)) if doc else ()
        return self._evals[key]

    def _meta(self, path: Path) -> GGUFMeta:
        try:
            st = path.stat()
        except OSError as exc:
            return GGUFMeta(error=str(exc))
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._gguf:
            self._gguf[key] = gguf_meta(path)
        return self._gguf[key]

    def _artifact_events(self, runs: Sequence[RunInfo]) -> list[dict]:
        out: list[dict] = []
        for run in sorted(runs, key=lambda r: r.started):
            cached = self._events.get(run.id)
            if cached is None:
                cached = [e for e in read_events(run.events_path) if e.get("kind") == EventKind.ARTIFACT]
                if not run.live:  # a finished run's events never change
                    self._events[run.id] = cached
            out.extend(cached)
        return out


def on_disk(artifact: Artifact) -> str:
    """What deleting ``artifact`` frees, for the confirmation: an adapter goes with its checkpoints."""
    path = Path(artifact.path)
    total = _size(path)
    checkpoints = len(_dirs(path / "checkpoints")) if artifact.kind == "adapter" else 0
    return (
        units.size(total)
        + " on disk"
        + (f", its {checkpoints} checkpoint{'s' if checkpoints > 1 else ''} included" if checkpoints else "")
    )


def delete(artifact: Artifact, runs: Sequence[RunInfo]) -> str:
    """Remove an artifact from disk; refuses while a live run writes to or reads from it."""
    path = Path(artifact.path)
    for run in runs:
        if (
            run.live
            and run.output
            and (
                run.output == str(path)
                or str(path).startswith(run.output.rstrip("/") + "/")
                or run.output.startswith(str(path).rstrip("/") + "/")
            )
        ):
            raise OSError(f"{run.stage} run {run.id} is writing to {path}; cancel it first")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return f"deleted {path}"


def _with(a: Artifact, **changes) -> Artifact:
    return replace(a, **changes)


def _dirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size(path: Path, skip: str | None = None) -> int | None:
    """Bytes in a file or a directory tree (an adapter's size leaves out its checkpoints)."""
    try:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for root, subdirs, files in os.walk(path):
            subdirs[:] = [d for d in subdirs if d != skip]
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total
    except OSError:
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
