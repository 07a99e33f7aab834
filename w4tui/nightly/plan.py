"""What tonight would do, decided from the config, the ledger and the disk, without running anything:
the data file, its samples, the parent adapter, each step's arguments and the disk it needs.
``w4tui nightly --dry-run`` prints this plan; the night's driver runs it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config
from core.datafile import DataReport, file_sha256, read_records
from core.errors import StageError
from core.ollama import client as oc
from core.units import size
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.record import dir_bytes
from w4tui.report import last_move

DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
STEPS = ("train", "convert", "quantize", "deploy", "verify")  # quantize: only with [nightly] keep_f16
BITS = {"Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q5_K_M": 5.7, "Q6_K": 6.6, "Q8_0": 8.5}
MARGIN = 256 << 20  # logs, tokenizer cache, the adapter's checkpoint


class BadData(Exception):
    """The night's file has a bad line; ``str()`` is ``file:line: what is wrong``, ``path`` the file."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class Plan:
    build: str
    data_file: Path | None = None
    data_sha256: str | None = None
    samples: int = 0
    parent_adapter: str | None = None
    skip: str | None = None  # why there is nothing to do tonight
    steps: list[tuple[str, list[str]]] = field(default_factory=list)
    disk_needed: int = 0
    disk_free: int = 0


def newest_data(config: Config) -> Path | None:
    """The newest file matching ``[nightly] dataset_glob``: by the date in its name, then by mtime."""
    files = [p for p in config.paths.incoming.glob(config.nightly.dataset_glob) if p.is_file()]
    if not files:
        return None
    return max(files, key=lambda p: ((m.group(1) if (m := DATE.search(p.name)) else ""), p.stat().st_mtime))


def count_samples(path: Path) -> int:
    """Samples in a JSONL file, checked with the trainer's own rules; BadData names the first bad line."""
    try:
        return len(read_records([path], False, DataReport(), lambda message: None))
    except StageError as exc:
        raise BadData(str(exc), path) from None


def parent_adapter(config: Config, ledger: Ledger) -> str | None:
    """The adapter of the build ``latest`` serves: the last promoted one, unless a rollback or a promotion
    by hand (the Ollama pane's p) since then moved ``latest`` to another nightly build (the night must not
    build on what was rolled back). Verify's own promotion is recorded before its run ends: not newer."""
    promoted = ledger.promoted()
    moved = last_move(config)
    if moved:
        if not promoted or moved["time"] > (promoted[0].get("promoted_at") or 0):
            for name in str(moved.get("builds") or "").split(", "):
                build = ledger.build(name.rsplit(":", 1)[-1])
                if build and build.get("adapter"):
                    return build["adapter"]
    return ledger.last_promoted_adapter()


def make_plan(config: Config, ledger: Ledger, build: str | None = None) -> Plan:
    """Tonight's plan. Raises BadData for a bad file (before any training)."""
    plan = Plan(build=build or f"nightly-{time.strftime('%Y%m%d-%H%M%S')}")
    plan.parent_adapter = parent_adapter(config, ledger)
    data = newest_data(config)
    if data is None:
        plan.skip = f"no new data: no file matching {config.nightly.dataset_glob} in {config.paths.incoming}"
        return plan
    plan.data_file, plan.data_sha256 = data, file_sha256(data)
    trained = ledger.lineage_data(plan.parent_adapter)
    if plan.data_sha256 in trained:
        plan.skip = f"no new data: {data.name} was already trained into {trained[plan.data_sha256]}"
        return plan
    plan.samples = count_samples(data)
    plan.steps = step_args(config, plan)
    plan.disk_needed = disk_needed(config, plan.parent_adapter)
    plan.disk_free = shutil.disk_usage(_existing(config.paths.outputs)).free
    return plan


def step_args(config: Config, plan: Plan) -> list[tuple[str, list[str]]]:
    out, model = config.paths.outputs, str(config.model.dir)
    n = config.nightly
    adapter = str(out / "adapters" / plan.build)
    train = [
        "--base_model",
        model,
        "--dataset",
        str(plan.data_file),
        "--output",
        adapter,
        "--epochs",
        str(n.epochs),
        "--learning_rate",
        str(n.learning_rate),
    ]
    if plan.parent_adapter:
        train += ["--resume_from", plan.parent_adapter]
    if n.replay > 0:
        train += ["--replay", str(n.replay), "--replay_dataset", str(config.paths.data)]
    f16 = str(out / "gguf" / f"{plan.build}-f16.gguf")
    quant = str(out / "gguf" / f"{plan.build}-{config.quantize.type}.gguf")
    tag = plan.build
    # The adapter is merged on the fly (no merged copy on disk) and, in one pass, quantized too (no F16).
    if one_pass(config):
        made = [
            ("convert", ["--model", model, "--adapter", adapter, "--output", quant, "--outtype", config.quantize.type])
        ]
    else:
        made = [
            ("convert", ["--model", model, "--adapter", adapter, "--output", f16]),
            ("quantize", ["--input", f16, "--output", quant, "--type", config.quantize.type]),
        ]
    return [
        ("train", train),
        *made,
        ("deploy", ["--gguf", quant, "--tag", tag]),
        ("verify", ["--model", f"{config.ollama.model}:{tag}", "--promote"]),
    ]


def one_pass(config: Config) -> bool:
    """Quantize inside convert: unless the F16 is to be kept, an importance matrix is set (llama-quantize
    only) or ggml's routines are missing (no llama_cpp binding: the quantize stage finds another way)."""
    return (
        not config.nightly.keep_f16
        and not config.quantize.imatrix
        and importlib.util.find_spec("llama_cpp") is not None
    )


def disk_needed(config: Config, parent_adapter: str | None) -> int:
    """Peak bytes a night adds on the outputs volume: the quantized GGUF, the F16 it is made from unless
    it is made in one pass, and an adapter."""
    model = config.model.dir
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors")) if model.is_dir() else 0
    try:
        dtype = json.loads((model / "config.json").read_text()).get("torch_dtype", "bfloat16")
    except (OSError, ValueError):
        dtype = "bfloat16"
    f16 = weights // 2 if dtype == "float32" else weights
    quant = int(f16 * BITS.get(config.quantize.type, 8.5) / 16)
    adapter = _dir_bytes(Path(parent_adapter)) if parent_adapter else f16 // 100
    return (0 if one_pass(config) else f16) + quant + adapter + MARGIN


def describe(plan: Plan, config: Config) -> list[str]:
    """The plan as lines for a person (``w4tui nightly --dry-run``)."""
    if plan.skip:
        return [f"tonight: skipped ({plan.skip})"]
    parent = plan.parent_adapter or f"none: the first night starts from the base model {config.model.dir}"
    lines = [
        f"data:    {plan.data_file} ({plan.samples} samples, sha256 {plan.data_sha256[:12]})",
        f"parent:  {parent}",
        f"build:   {plan.build} -> {config.ollama.model}:{plan.build}",
        "steps:",
    ]
    lines += [f"  {i}. {stage:<8} {' '.join(args)}" for i, (stage, args) in enumerate(plan.steps, 1)]
    enough = "ok" if plan.disk_free >= plan.disk_needed else "NOT ENOUGH"
    lines.append(
        f"disk:    needs {size(plan.disk_needed)} on {config.paths.outputs}, {size(plan.disk_free)} free ({enough})"
    )
    lines.append(
        "latest moves only if verify passes; "
        + (
            "no F16 GGUF is written (one pass to the quantized GGUF)"
            if one_pass(config)
            else "the F16 GGUF is deleted once its quantized child is verified"
        )
    )
    return lines


def ollama_problem(config: Config) -> str | None:
    """Why the deploy step would fail if it ran now (Ollama down), or None. Said before the training:
    a 7B night trains for hours before its deploy finds the server gone. Only a warning: the server
    may be up by then (the Ollama app starts at login)."""
    try:
        oc.version(config)
    except oc.OllamaError as exc:
        return f"{exc.message} now; the night's deploy step needs it"
    return None


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _dir_bytes(path: Path) -> int:
    return dir_bytes(path) if path.exists() else 0
