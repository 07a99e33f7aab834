"""Real PEFT LoRA adapters with non-zero B on the tiny model, and PEFT's own merge as the reference.

Built once per test session (memoized on the base path) because each costs a transformers load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from core.events import read_events

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KINDS = {
    # what the train stage makes: fp32 A/B on every projection
    "plain": dict(r=8, lora_alpha=16, target_modules=PROJECTIONS),
    # rsLoRA with per-module r and alpha, embedding LoRA, lm_head, a whole saved norm, trained biases
    "full": dict(
        r=8,
        lora_alpha=16,
        use_rslora=True,
        rank_pattern={"down_proj": 4},
        alpha_pattern={"o_proj": 64},
        target_modules=PROJECTIONS + ["embed_tokens", "lm_head"],
        modules_to_save=["model.norm"],
        bias="lora_only",
    ),
    # the product's night: r=16, alpha=32 on every projection (fp32 A/B, as the train stage saves it)
    "night": dict(r=16, lora_alpha=32, target_modules=PROJECTIONS),
    # bf16 A/B (no fp32 autocast) and a bias on lora_B (PEFT merges it only into layers with a bias)
    "bf16": dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], lora_bias=True),
}
_made: dict[tuple[str, str], Path] = {}


def make_adapter(base: Path, root: Path, kind: str) -> Path:
    key = (str(base), kind)
    if key not in _made:
        _made[key] = _build(base, root / f"adapter-{kind}", kind)
    return _made[key]


def _build(base: Path, out: Path, kind: str) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    config = LoraConfig(init_lora_weights=False, **KINDS[kind])
    peft = get_peft_model(model, config, autocast_adapter_dtype=kind != "bf16")
    with torch.no_grad():  # like a trained adapter: a delta small next to W, every trainable tensor moved
        for name, p in peft.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_B" in name or "lora_embedding_B" in name:
                p.mul_(0.05)
            if "lora_" not in name or name.endswith("lora_B.default.bias"):
                p.add_(0.05 * torch.randn_like(p))
    peft.save_pretrained(out)
    return out


def peft_merged(base: Path, adapter: Path, dtype=torch.bfloat16):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def stage(module: str, *args, tmp_path: Path, env: dict | None = None):
    """Run ``python -m stages.<module> args`` as the runner would; (process, events)."""
    events = tmp_path / f"{module}.jsonl"
    events.unlink(missing_ok=True)
    full_env = dict(os.environ, W4TUI_EVENTS=str(events), W4TUI_RUN_ID="t", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *map(str, args)], capture_output=True, text=True, env=full_env
    )
    return proc, read_events(events)


def load_shards(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
