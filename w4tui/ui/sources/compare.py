"""Two builds side by side (the Artifacts pane: m marks one, c compares the selected one with it): data
files, hyper-parameters, losses, the eval table, the regression score and the inference figures.

``build_facts`` reads the files (training_run.json of the build's adapter, <build>-eval.json) and runs
in a worker; ``compare_text`` is pure. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from core import evaltable, trainsettings
from core.train_backend import trained_by
from w4tui.ui.sources.artifacts import Artifact

LOSSES = ("final_loss", "eval_loss", "main_eval_loss")
VERIFY = (
    "regression_score",
    "regression_worse",
    "inference_tokens_per_s",
    "inference_ttft_ms",
    "inference_load_s",
    "inference_memory_bytes",
    "inference_warnings",
    "passed",
)


def adapter_of(a: Artifact, artifacts: list[Artifact]) -> str | None:
    """The adapter a build was made from: itself, its merge record, or its (F16 parent's) artifact event."""
    if a.kind in ("adapter", "checkpoint"):
        return a.path
    extra = dict(a.extra)
    if extra.get("adapter"):
        return extra["adapter"]
    parent = next((p for p in artifacts if p.path == a.parent and p is not a), None)
    return adapter_of(parent, artifacts) if parent is not None else None


def build_facts(a: Artifact, artifacts: list[Artifact]) -> dict[str, str]:
    """Label -> value for one build (missing facts are left out)."""
    facts = {"build": a.name, "kind": f"{a.kind} {a.quant or ''}".strip()}
    adapter = adapter_of(a, artifacts)
    if adapter:
        facts["adapter"] = Path(adapter).name
        try:
            record = json.loads((Path(adapter) / "training_run.json").read_text())
        except (OSError, ValueError):
            record = {}
        for path, sha in sorted((record.get("data") or {}).items()):
            facts[f"data {Path(path).name}"] = sha[:12]
        args = record.get("args") or {}
        if record:
            facts["trained by"] = trained_by(record)
        # the settings of the COMPARE view (core/trainsettings.py), one row each
        facts.update({k: str(args[k]) for k in trainsettings.names(trainsettings.COMPARE) if args.get(k) is not None})
        facts.update({k: f"{record[k]:.4f}" for k in LOSSES if isinstance(record.get(k), int | float)})
        if record.get("train_samples") is not None:
            facts["samples"] = f"{record['train_samples']} train / {record.get('eval_samples')} eval"
    if a.kind == "gguf":
        doc = evaltable.read(evaltable.for_gguf(a.path))
        for row in doc["rows"] if doc else []:
            kl = f", KL {row['kl_mean']:.5f}" if row.get("kl_mean") is not None else ""
            facts[f"eval {row['name']}"] = f"ppl {row['ppl']:.4f}{kl}" if row.get("ppl") else "-"
    facts.update({k: v for k, v in a.verify if k in VERIFY})
    for part in dict(a.verify).get("regression_prompts", "").split(";"):  # one row per regression prompt
        name, _, value = part.partition("=")
        if value:
            facts[f"regression {name}"] = value
    return facts


def compare_text(left: dict[str, str], right: dict[str, str], width: int = 36) -> str:
    """A three-column table: the fact, the marked build, the selected one; differing rows marked ≠."""
    labels = [k for k in left if k != "build"] + [k for k in right if k not in left]  # build: the head
    lines = [f"  {'':<24}{left.get('build', '?')[:width]:<{width}}  {right.get('build', '?')[:width]}"]
    for label in labels:
        a, b = left.get(label, "-"), right.get(label, "-")
        mark = "≠" if a != b else " "
        lines.append(f"{mark} {label[:23]:<24}{a[:width]:<{width}}  {b[:width]}")
    return "\n".join(lines)
