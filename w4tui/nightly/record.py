"""What a finished step run says about its build, read from its files only (artifact events,
``training_run.json``, ``verify.json``, the GGUF lineage keys): the night records it this way as it
goes, and ``ledger.rebuild`` reads the same files the same way, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core import trainsettings
from core.gguf_header import NotGGUF, read_info
from w4tui.runs.runner import Run


def build_fields(run: Run, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` updated with what ``run`` (one step of a build) produced."""
    out = dict(fields)
    runs, sizes = dict(out.get("runs") or {}), dict(out.get("sizes") or {})
    runs[run.stage] = run.id
    out["runs"] = runs
    artifacts = [a for a in run.artifacts() if a.get("path")]
    last = artifacts[-1] if artifacts else None
    if run.stage == "train" and last and last.get("type") == "adapter":
        out["adapter"] = last["path"]
        sizes["adapter"] = dir_bytes(Path(last["path"]))
        out.update(training_record(Path(last["path"])))
    elif run.stage == "convert" and last and last.get("quantized_from"):  # one pass: no F16 on disk
        out["gguf"], out["quant"], sizes["gguf"] = last["path"], last.get("quant"), last.get("bytes")
        out.update(_lineage(Path(last["path"])))
    elif run.stage == "convert" and last:
        out["f16"] = last["path"]
        sizes["f16"] = last.get("bytes")
        out.update(_lineage(Path(last["path"])))
    elif run.stage == "quantize" and last:
        out["gguf"] = last["path"]
        out["quant"] = last.get("defer_quantize") or last.get("quant")
        if not last.get("defer_quantize"):  # no quantizer: the F16 file goes on, Ollama quantizes it
            sizes["gguf"] = last.get("bytes")
    elif run.stage == "deploy" and last:
        out["tag"] = last["path"]
    elif run.stage == "verify":
        report = _verify_report(run)
        passed = bool(report.get("passed")) if report else False
        out["verify"] = "passed" if passed else "failed"
        out["promoted"] = int(bool(report.get("promoted"))) if report else 0
        if out["promoted"]:
            out["promoted_at"] = run.ended or run.started
        error = run.error()
        out["verify_error"] = error.get("message") if error and not passed else None
    out["sizes"] = sizes
    return out


def training_record(adapter: Path) -> dict[str, Any]:
    try:
        record = json.loads((adapter / "training_run.json").read_text())
    except (OSError, ValueError):
        return {}
    base = record.get("base_model")
    parent = record.get("parent")
    args = record.get("args") or {}
    return {
        "parent_adapter": parent if parent and parent != base else None,
        "base_model": base,
        "data": dict(record.get("data") or {}),
        "hparams": hparams(args),
    }


def hparams(args: dict[str, Any]) -> dict[str, Any]:
    """A build's hyper-parameters as the ledger keeps them: the run record's settings of the RECORD view
    (core/trainsettings.py)."""
    return {k: args[k] for k in trainsettings.names(trainsettings.RECORD) if k in args}


def _lineage(gguf: Path) -> dict[str, Any]:
    """The GGUF's own record of where its weights came from (``w4tui.adapter`` / ``w4tui.base_model``)."""
    try:
        kv = read_info(gguf, tensors=False).kv
    except (OSError, NotGGUF):
        return {}
    out = {}
    if kv.get("w4tui.adapter"):
        out["adapter"] = str(kv["w4tui.adapter"])
    if kv.get("w4tui.base_model"):
        out["base_model"] = str(kv["w4tui.base_model"])
    return out


def _verify_report(run: Run) -> dict | None:
    try:
        return json.loads((run.dir / "verify.json").read_text())
    except (OSError, ValueError):
        verified = [a for a in run.artifacts() if a.get("type") == "verified"]
        return {"passed": verified[-1].get("passed"), "promoted": verified[-1].get("promoted")} if verified else None


def dir_bytes(path: Path) -> int:
    """Bytes under ``path`` (a file or a directory), skipping what vanishes while we look."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
