"""How long a training run will take, measured before it starts, and afterwards how far that was off.

The rate (trained tokens per second) comes from the newest finished run on the same device with the
same settings that decide the cost of a token (base model, its dtype, sequence length, batch layout,
checkpointing, LoRA shape); without one, from a short calibration on the real model (see setup.py).
The estimate is tokens to train / rate. Standard library only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import trainsettings
from .units import rough_duration

RECORD = "training_run.json"
# The arguments that change what one trained token costs (the learning rate or the data do not).
COST_ARGS = trainsettings.names(trainsettings.COST)


def cost_key(args: dict, device: str, base_dtype: str) -> dict:
    # a rate measured on 8 GPUs says nothing of 1 (records before --gpus: one rank)
    ranks = int(args.get("gpus") or 1) * int(args.get("nnodes") or 1)
    return {
        "device": device,
        "base_dtype": base_dtype,
        "base_model": str(args.get("base_model")),
        **{k: args.get(k) for k in COST_ARGS},
        "ranks": ranks,
        # fsdp gathers the base for every micro-batch: not ddp's rate (one rank: a plain run either way)
        "shard": (args.get("shard") or "ddp") if ranks > 1 else "ddp",
    }


def previous_rate(adapters: Path, key: dict, exclude: Path | None = None) -> tuple[float, str] | None:
    """(tokens/s, the run's directory) of the newest finished run with this cost key, or None."""
    found = []
    for record_path in adapters.glob(f"*/{RECORD}"):
        if exclude is not None and record_path.parent.resolve() == exclude.resolve():
            continue
        try:
            record = json.loads(record_path.read_text())
            rate = float(record["tokens_per_second"])
            same = cost_key(record["args"], record["device"], record["base_dtype"]) == key
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same and rate > 0:
            found.append((float(record.get("ended") or 0), rate, str(record_path.parent)))
    if not found:
        return None
    _, rate, where = max(found)
    return rate, where


def estimate(tokens: int, rate: float, source: str, now: float | None = None) -> dict:
    seconds = tokens / rate
    now = time.time() if now is None else now
    return {
        "eta_s": round(seconds, 1),
        "tokens": tokens,
        "rate": round(rate, 1),
        "source": source,
        "text": f"about {rough_duration(seconds)}, done ~{time.strftime('%H:%M', time.localtime(now + seconds))}"
        f" ({tokens:,} tokens at {rate:,.0f} tokens/s, {source})",
    }


def outcome(predicted: dict | None, actual_s: float) -> dict | None:
    """What the run record keeps: the estimate, the actual time and how far off it was (+: slower)."""
    if not predicted:
        return None
    return {
        **{k: predicted[k] for k in ("eta_s", "tokens", "rate", "source")},
        "actual_s": round(actual_s, 1),
        "error": round(actual_s / predicted["eta_s"] - 1, 4) if predicted["eta_s"] else None,
    }
