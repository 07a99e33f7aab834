"""Disk retention for nightly builds: a 7B night writes ~15 GB of F16 GGUF and ~4.7 GB of Q4_K_M.

- the F16 GGUF goes once its quantized child passed verification (Ollama holds its own copy);
- a night that is over without its build verified (failed, crashed, cancelled; killed and settled by
  catchup.py) leaves its F16 to nobody: it goes too, and so do the partial files its killed steps left
  (each only once its writer is gone: its lock is free, and no run of that night is live);
- only the newest ``[nightly] keep`` builds keep their adapter, GGUFs and Ollama build tag;
- never what ``latest`` / ``previous`` serve (asked from Ollama, and the ledger's last two promotions
  when it is down, and the builds an interrupted promotion's journal names), and never anything the loop
  did not create (only the builds of nights, only under outputs: an imported adapter is the user's).

Each deletion is appended to ``<state>/retention.jsonl`` so a rebuilt ledger knows it too.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Config
from core.fsutil import remove_stale_partials
from core.names import LIVE_OUTCOMES, NightOutcome
from core.ollama import client as oc
from core.ollama import promote as op
from w4tui.runs.runner import RunError, Runner

if TYPE_CHECKING:  # only the annotations: the ledger's rebuild() replays this module's log
    from w4tui.nightly.ledger import Ledger

LOG_FILE = "retention.jsonl"


def protected(config: Config, ledger: Ledger) -> set[str]:
    """Builds that latest/previous point at (by digest on the server), plus the last two promoted."""
    keep = {b["build"] for b in ledger.promoted()[:2]}

    try:
        known = oc.digests(config)
    except oc.OllamaError:
        return keep
    served = {known.get(oc.tag(config, name)) for name in op.POINTERS} - {None}
    journal = op.pending(config) or {}  # an interrupted move: what it moves from and to stays until settled
    served |= {journal.get(k) for k in ("latest_before", "previous_before", "latest_after", "previous_after")} - {None}
    keep |= {b["build"] for b in ledger.builds() if b.get("tag") and known.get(oc.full_name(b["tag"])) in served}
    return keep


def apply(config: Config, ledger: Ledger, tonight: str | None = None) -> list[str]:
    """Delete what the rules allow; returns one line per deletion."""
    lines: list[str] = []
    build = ledger.build(tonight) if tonight else None
    if build and build.get("verify") == "passed" and build.get("f16") and not build.get("f16_deleted"):
        if _remove(config, Path(build["f16"])):
            lines.append(f"deleted {build['f16']} (its {build.get('quant')} child is verified)")
        _record(config, ledger, build["build"], "f16_deleted")
    lines += reclaim(config, ledger)
    keep = config.nightly.keep
    safe = protected(config, ledger)
    alive = [b for b in ledger.builds() if not b.get("deleted") and b.get("night")]
    for old in alive[keep:]:
        if old["build"] in safe or old["build"] == tonight:
            continue
        removed = _delete_build(config, old)
        if removed is None:
            lines.append(f"kept {old['build']} for now: its Ollama tag could not be removed (is Ollama up?)")
            continue
        lines.append(f"retention: removed build {old['build']} ({', '.join(removed) or 'nothing left on disk'})")
        _record(config, ledger, old["build"], "deleted")
    return lines


def reclaim(config: Config, ledger: Ledger) -> list[str]:
    """What the nights that are over left to nobody: the F16 of a build never verified, partial files."""
    runner, lines = Runner(config), []
    for build in ledger.builds():
        night = ledger.night(build["night"]) if build.get("night") and not build.get("deleted") else None
        if night is None or night["outcome"] in LIVE_OUTCOMES:
            continue
        runs = [_run(runner, s.get("run")) for s in night.get("steps") or []]
        if any(run is not None and run.live for run in runs):
            continue  # a step that outlived its night's driver is still writing
        outputs = {build.get(k) for k in ("adapter", "f16", "gguf")} | {run.output for run in runs if run}
        left = [p for out in sorted(o for o in outputs if o) for p in _partials(config, Path(out))]
        if left:
            lines.append(f"retention: removed {len(left)} partial file(s) the killed steps of {build['build']} left")
        f16 = build.get("f16")
        unused = night["outcome"] != NightOutcome.PROMOTED and build.get("verify") != "passed"
        if f16 and unused and not build.get("f16_deleted") and f16 != build.get("gguf"):
            if _remove(config, Path(f16)):
                lines.append(f"deleted {f16} (its night ended {night['outcome']}: nothing quantizes it now)")
            _record(config, ledger, build["build"], "f16_deleted")
    return lines


def _run(runner: Runner, run_id: str | None):
    try:
        return runner.get(run_id) if run_id else None
    except RunError:
        return None


def _partials(config: Config, output: Path) -> list[Path]:
    """The partials of ``output`` whose writer is gone (core/fsutil.py: a live writer holds a lock)."""
    try:
        output.resolve().relative_to(config.paths.outputs.resolve())
    except ValueError:
        return []
    return remove_stale_partials(output.parent, output.name)


def _delete_build(config: Config, build: dict) -> list[str] | None:
    removed = []
    if build.get("tag"):
        try:
            if oc.exists(config, build["tag"]):
                oc.delete(config, build["tag"])
                removed.append(build["tag"])
        except oc.OllamaError:
            return None
    for key in ("gguf", "f16", "adapter"):
        path = build.get(key)
        if path and _remove(config, Path(path)):
            removed.append(Path(path).name)
        if path and key == "gguf":
            _remove(config, Path(path).with_suffix(".Modelfile"))
    return removed


def _remove(config: Config, path: Path) -> bool:
    """Remove a file or directory under [paths] outputs; anything elsewhere is not ours to delete."""
    outputs = config.paths.outputs.resolve()
    try:
        path.resolve().relative_to(outputs)
    except ValueError:
        return False
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    if path.exists() or path.is_symlink():
        path.unlink()
        return True
    return False


def _record(config: Config, ledger: Ledger, build: str, column: str) -> None:
    now = time.time()
    ledger.upsert_build(build, **{column: now})
    with open(config.paths.state / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"build": build, "column": column, "time": now}) + "\n")


def replay(config: Config, ledger: Ledger) -> None:
    """Re-apply the deletions log to a rebuilt ledger."""
    try:
        lines = (config.paths.state / LOG_FILE).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
            if entry["column"] in ("f16_deleted", "deleted") and ledger.build(entry["build"]):
                ledger.upsert_build(entry["build"], **{entry["column"]: entry["time"]})
        except (ValueError, KeyError, TypeError):
            continue
