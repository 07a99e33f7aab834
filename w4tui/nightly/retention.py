"""Disk retention for nightly builds: a 7B night writes ~15 GB of F16 GGUF and ~4.7 GB of Q4_K_M.

- the F16 GGUF goes once its quantized child passed verification (Ollama holds its own copy);
- only the newest ``[nightly] keep`` builds keep their adapter, GGUFs and Ollama build tag;
- never what ``latest`` / ``previous`` serve (asked from Ollama, and the ledger's last two promotions
  when it is down), and never anything the loop did not create (only ledger builds, only under outputs).

Each deletion is appended to ``<state>/retention.jsonl`` so a rebuilt ledger knows it too.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Config
from core.ollama import client as oc
from core.ollama import promote as op

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
    keep = config.nightly.keep
    safe = protected(config, ledger)
    alive = [b for b in ledger.builds() if not b.get("deleted")]
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
