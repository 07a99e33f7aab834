"""The mlx backend against mlx-lm's own trainer (``mlx_lm lora``), same model, data and settings, one run.

    python bench/bench_train.py --backend mlx            # ~3 min on 2 CPU cores (mlx's CPU build)
    python bench/bench_train.py --backend mlx --samples 256 --max_len 512   # on a Mac: Metal, bigger

A third row runs the torch backend on the same data and settings on its own device (MPS on a Mac), so the
same command tells a Mac user what mlx gains over torch on MPS there.

Both train LoRA r 16 / alpha 32 (mlx-lm: scale 2.0), dropout 0.05, all seven projections of every layer,
on the tiny Qwen2 model with a 4-bit base (QLoRA; ours quantizes the Hugging Face weights in memory,
mlx-lm trains on ``mlx_lm convert -q`` of the same weights, same group size and dtype), one epoch over
the same length-skewed chat data with the loss on assistant tokens only, the same batch size, AdamW
without weight decay, cosine schedule with warmup, no gradient checkpointing.
mlx-lm batches samples of similar length padded to a multiple of 32; ours packs random batches.
tokens/s counts the data's real tokens (each sample once) over each trainer's own training-loop time;
peak memory is mlx's peak (``mx.get_peak_memory``) in each trainer's process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
KEYS = [f"self_attn.{p}" for p in PROJECTIONS[:4]] + [f"mlp.{p}" for p in PROJECTIONS[4:]]


def run_ours(root: Path, model: Path, data: Path, out: Path, cfg: dict, backend: str = "mlx") -> dict:
    from core.events import read_events  # this file also runs as mlx-lm's trainer process, without core

    events = out.with_suffix(".events.jsonl")
    config = out.parent / "config.toml"
    config.write_text('[paths]\nstate = "state"\n')
    env = dict(os.environ, W4TUI_EVENTS=str(events), W4TUI_RUN_ID="bench", W4TUI_CONFIG=str(config))
    env["W4TUI_LOG_LEVEL"] = "WARNING"
    flags = {
        "--base_model": model,
        "--dataset": data,
        "--output": out,
        "--backend": backend,
        **({"--quantize_base": 4} if backend == "mlx" else {"--device": "auto"}),
        "--eval_fraction": 0,
        "--checkpoint_every": 1_000_000,
        "--batch_size": cfg["batch"],
        "--gradient_accumulation": 1,
        "--epochs": 1,
        "--learning_rate": cfg["lr"],
        "--max_seq_length": cfg["max_len"],
        "--seed": cfg["seed"],
        "--log_every": 1,
        "--lora_r": 16,
        "--lora_alpha": 32,
        "--lora_dropout": 0.05,
    }
    cmd = [sys.executable, "-m", "stages.train_lora", *(str(x) for kv in flags.items() for x in kv)]
    proc = subprocess.run([*cmd, "--no-gradient_checkpointing"], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"train stage ({backend}) failed: {proc.stderr.strip()[-2000:]}")
    found = read_events(events)
    done = [e for e in found if e["kind"] == "done"][-1]
    steps = [e for e in found if e["kind"] == "metrics" and "loss" in e]
    return {
        "seconds": done["train_seconds"],
        "steps": done["steps"],
        "peak": max(e.get("mem_peak", 0) for e in steps),  # torch reports no peak (0: not shown)
        "device": steps[-1].get("device", "?"),
        "loss": [e["loss"] for e in steps],
    }


def run_mlx_lm(model: Path, data: Path, work: Path, cfg: dict, steps: int) -> dict:
    """``mlx_lm lora`` on a 4-bit ``mlx_lm convert`` of the same weights (float32 on the CPU, as ours)."""
    import mlx.core as mx

    quantized = work / "tiny-q4-mlx"
    if not quantized.exists():
        dtype = "bfloat16" if mx.metal.is_available() else "float32"
        convert = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(model), "--mlx-path", str(quantized)]
        subprocess.run([*convert, "-q", "--q-bits", "4", "--q-group-size", "64", "--dtype", dtype], check=True)
    folder = work / "mlx-lm-data"
    folder.mkdir(exist_ok=True)
    lines = data.read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "valid.jsonl").write_text("\n".join(lines[: cfg["batch"]]) + "\n")  # one batch, outside its train time
    warmup = max(1, round(steps * 0.03))
    config = {
        "model": str(quantized),
        "train": True,
        "data": str(folder),
        "fine_tune_type": "lora",
        "optimizer": "adamw",
        "optimizer_config": {"adamw": {"weight_decay": 0.0, "bias_correction": True}},
        "seed": cfg["seed"],
        "num_layers": -1,
        "batch_size": cfg["batch"],
        "iters": steps,
        "val_batches": 1,
        "learning_rate": cfg["lr"],
        "steps_per_report": 1,
        "steps_per_eval": 1_000_000,
        "save_every": 1_000_000,
        "adapter_path": str(work / "mlx-lm-adapter"),
        "max_seq_length": cfg["max_len"],
        "grad_checkpoint": False,
        "mask_prompt": True,
        "lr_schedule": {"name": "cosine_decay", "warmup": warmup, "arguments": [cfg["lr"], steps - warmup, 0.0]},
        "lora_parameters": {"rank": 16, "scale": 2.0, "dropout": 0.05, "keys": KEYS},
    }
    path, result = work / "mlx-lm-lora.json", work / "mlx-lm-result.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, __file__, str(path), str(result)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"mlx_lm lora failed: {proc.stderr.strip()[-2000:]}")
    reports = json.loads(result.read_text())
    # its own loop time: each report's tokens over its rate (it counts labelled tokens; the ratio cancels)
    seconds, before = 0.0, 0
    for r in reports:
        seconds += (r["trained_tokens"] - before) / r["tokens_per_second"]
        before = r["trained_tokens"]
    return {
        "seconds": seconds,
        "steps": reports[-1]["iteration"],
        "peak": reports[-1]["peak_memory"] * 1e9,
        "loss": [r["train_loss"] for r in reports],
    }


def _mlx_lm_train(config_path: str, result_path: str) -> None:
    """In its own process: mlx_lm lora's loader, datasets and trainer (lora.py's run() without its
    reporting), with a callback that keeps the reports it makes."""
    import types

    from mlx_lm.lora import CONFIG_DEFAULTS, load_dataset, train_model
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.utils import load

    args = types.SimpleNamespace(**{**CONFIG_DEFAULTS, **json.loads(Path(config_path).read_text())})
    reports: list[dict] = []

    class Keep(TrainingCallback):
        def on_train_loss_report(self, train_info: dict) -> None:
            reports.append(train_info)

    model, tokenizer = load(args.model)
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    train_model(args, model, train_set, valid_set, Keep())
    Path(result_path).write_text(json.dumps(reports))


def main(root: Path, work: Path, model: Path, data: Path, real_tokens: int, samples: int, args) -> int:
    import mlx.core as mx

    cfg = {"batch": 4, "lr": 3e-3, "max_len": args.max_len, "seed": 7}
    steps = math.ceil(samples / cfg["batch"])
    print(
        f"mlx {mx.__version__} on {'Metal' if mx.metal.is_available() else 'the CPU'}; {samples} samples, "
        f"{real_tokens} real tokens, batch {cfg['batch']}, {steps} steps, 4-bit base, LoRA r 16 on all projections",
        flush=True,
    )
    ours = run_ours(root, model, data, work / "ours", cfg)
    print(f"  done: ours ({ours['seconds']:.0f} s)", flush=True)
    theirs = run_mlx_lm(model, data, work, cfg, steps)
    print(f"  done: mlx_lm lora ({theirs['seconds']:.0f} s)", flush=True)
    # The same data and settings on the torch backend, on its own device choice (MPS on a Mac: the
    # comparison a Mac user wants; the CPU here), bf16/fp32 base: what mlx replaces.
    torch_run = run_ours(root, model, data, work / "ours-torch", cfg, backend="torch")
    print(f"  done: ours --backend torch ({torch_run['seconds']:.0f} s)", flush=True)
    print(
        f"\n{'trainer':24} {'tokens/s':>9} {'seconds':>8} {'steps':>5} {'peak MB':>8} {'first loss':>10} {'last loss':>9}"
    )
    rows = (("ours (--backend mlx)", ours), ("mlx_lm lora", theirs), (f"ours torch {torch_run['device']}", torch_run))
    for name, r in rows:
        peak = f"{r['peak'] / 1e6:8.0f}" if r["peak"] else f"{'-':>8}"
        print(
            f"{name:24} {real_tokens / r['seconds']:9.0f} {r['seconds']:8.1f} {r['steps']:5d} {peak} "
            f"{r['loss'][0]:10.4f} {r['loss'][-1]:9.4f}"
        )
    speed = theirs["seconds"] / ours["seconds"]
    memory = ours["peak"] / theirs["peak"]
    print(
        f"\nours vs mlx_lm lora: {speed:.2f}x real tokens/s (goal >= 1.0), {memory:.2f}x peak memory (goal <= 1.0); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"mlx vs torch on {torch_run['device']} (4-bit vs the torch backend's base precision): "
        f"{torch_run['seconds'] / ours['seconds']:.2f}x real tokens/s"
    )
    return 0


if __name__ == "__main__":
    _mlx_lm_train(sys.argv[1], sys.argv[2])
