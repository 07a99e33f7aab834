"""A recorded w4tui workspace for the TUI tests: finished runs (download, a 50-step train run with eval
loss, checkpoints and MPS memory, merge, convert that failed with an error event and a traceback in its
log, deploy and verify of an earlier build), the files they made (a real GGUF header included), and fixed
times, so snapshots are the same on every machine (with TZ=UTC and the fixed clock ``NOW``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from w4tui.ui.sources.system import SystemSample

T0 = 1764180000.0  # 2025-11-26 18:00:00 UTC
NOW = T0 + 3 * 3600  # the tests' clock: three hours later
BUILD = "20251126-1800"
OLD = "20251125-2130"

CONFIG = """\
[model]
base = "models/base"
dir = "models/base"
[paths]
data = "data/train"
outputs = "outputs"
runs = "runs"
state = "state"
[train]
max_seq_length = 64
batch_size = 4
gradient_accumulation = 1
gradient_checkpointing = false
epochs = 1
eval_fraction = 0.1
"""


def _run(
    root: Path,
    run_id: str,
    stage: str,
    start: float,
    end: float,
    status: str,
    exit_code: int,
    events: list[dict],
    log: str,
    output: str | None = None,
) -> None:
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    record = {
        "id": run_id,
        "stage": stage,
        "command": ["python", "-m", f"stages.{stage}"],
        "cwd": str(root),
        "output": output,
        "created": start - 0.2,
        "started": start,
        "ended": end,
        "pid": 4242,
        "exit_code": exit_code,
        "status": status,
    }
    (d / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [json.dumps({"v": 1, "run": run_id, "stage": stage, **e}, separators=(",", ":")) for e in events]
    (d / "events.jsonl").write_text("\n".join(lines) + "\n")
    (d / "output.log").write_text(log)


def train_events(start: float, steps: int = 50, adapter: str = "") -> list[dict]:
    events: list[dict] = [
        {"time": start, "kind": "start", "pid": 4242},
        {"time": start + 1, "kind": "log", "level": "info", "message": "216 train / 24 eval samples, 61234 tokens"},
    ]
    for step in range(1, steps + 1):
        t = start + 2 + step * 30
        loss = 2.4 * math.exp(-step / 18) + 0.55 + 0.06 * math.sin(step * 1.7)
        events.append(
            {
                "time": t,
                "kind": "metrics",
                "step": step,
                "total_steps": steps,
                "epoch": round(step / steps * 3, 4),
                "loss": round(loss, 6),
                "learning_rate": 2e-4 * (1 - step / steps),
                "grad_norm": round(0.8 + 0.1 * math.cos(step), 6),
                "tokens_per_second": 812.5 + step,
                "eta_s": float((steps - step) * 30),
                "device": "mps",
                "mem_allocated": int(9.5e9 + step * 2e7),
                "mem_driver": int(12.1e9 + step * 1e7),
                "mem_recommended_max": int(21.3e9),
            }
        )
        events.append({"time": t, "kind": "progress", "done": step, "total": steps, "unit": "steps"})
        if step % 10 == 0:
            events.append(
                {
                    "time": t + 1,
                    "kind": "metrics",
                    "step": step,
                    "total_steps": steps,
                    "eval_loss": round(2.3 * math.exp(-step / 20) + 0.7, 6),
                }
            )
            events.append(
                {
                    "time": t + 2,
                    "kind": "artifact",
                    "type": "checkpoint",
                    "step": step,
                    "path": f"{adapter}/checkpoints/step-{step:07d}",
                }
            )
    events.append(
        {
            "time": start + 2 + steps * 30 + 5,
            "kind": "artifact",
            "type": "adapter",
            "path": adapter,
            "parent": None,
            "base_model": "models/base",
        }
    )
    events.append({"time": start + 2 + steps * 30 + 6, "kind": "done", "status": "succeeded", "steps": steps})
    return events


def _gguf(path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter, LlamaFileType

    writer = GGUFWriter(str(path), "qwen2")
    writer.add_name("web4-agent")
    writer.add_context_length(32768)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_token_list([f"tok{i}" for i in range(300)])
    for name, shape in (("token_embd.weight", (300, 8)), ("blk.0.attn_q.weight", (8, 8)), ("output_norm.weight", (8,))):
        writer.add_tensor(name, np.full(shape, 0.5, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def build(root: Path) -> Path:
    """Write the workspace under ``root``; returns its config.toml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(CONFIG)
    out = root / "outputs"
    base = root / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "qwen2"}\n')
    (base / "model.safetensors").write_bytes(b"\0" * 4096)
    adapter = out / "adapters" / BUILD
    for step in (40, 50):
        ckpt = adapter / "checkpoints" / f"step-{step:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_model.safetensors").write_bytes(b"\1" * 2048)
    (adapter / "adapter_config.json").write_text('{"r": 16}\n')
    (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 2048)
    merged = out / "merged" / BUILD
    merged.mkdir(parents=True)
    (merged / "config.json").write_text('{"model_type": "qwen2"}\n')
    (merged / "model.safetensors").write_bytes(b"\2" * 8192)
    (out / "gguf").mkdir(parents=True)
    old_gguf = out / "gguf" / f"{OLD}-f16.gguf"
    _gguf(old_gguf)
    t = T0
    _run(
        root,
        "20251125-213000-deploy-aa01",
        "deploy",
        t - 70000,
        t - 69900,
        "succeeded",
        0,
        [
            {
                "time": t - 69950,
                "kind": "artifact",
                "type": "ollama",
                "path": f"web4-agent:build-{OLD}",
                "parent": str(old_gguf),
            },
            {"time": t - 69949, "kind": "done", "status": "succeeded"},
        ],
        "deployed\n",
        f"web4-agent:build-{OLD}",
    )
    _run(
        root,
        "20251125-213500-verify-aa02",
        "verify",
        t - 69800,
        t - 69700,
        "succeeded",
        0,
        [
            {
                "time": t - 69750,
                "kind": "artifact",
                "type": "verified",
                "path": f"web4-agent:build-{OLD}",
                "passed": True,
                "promoted": True,
            },
            {"time": t - 69749, "kind": "done", "status": "succeeded"},
        ],
        "verified\n",
    )
    _run(
        root,
        "20251126-175000-download-b001",
        "download",
        t - 600,
        t - 540,
        "succeeded",
        0,
        [
            {"time": t - 599, "kind": "start", "pid": 4242},
            {"time": t - 545, "kind": "artifact", "type": "model", "path": str(base)},
            {"time": t - 544, "kind": "done", "status": "succeeded"},
        ],
        "downloaded Qwen/Qwen2.5-Coder-7B-Instruct\n",
        str(base),
    )
    train_end = t + 2 + 50 * 30 + 6
    _run(
        root,
        "20251126-180000-train-b002",
        "train",
        t,
        train_end,
        "succeeded",
        0,
        train_events(t, adapter=str(adapter)),
        "".join(f"step {i}/50 loss {2.4 * math.exp(-i / 18) + 0.55:.4f}\n" for i in range(1, 51)),
        str(adapter),
    )
    _run(
        root,
        "20251126-182600-merge-b003",
        "merge",
        train_end + 60,
        train_end + 120,
        "succeeded",
        0,
        [
            {
                "time": train_end + 100,
                "kind": "artifact",
                "type": "merged",
                "path": str(merged),
                "parent": str(adapter),
            },
            {"time": train_end + 101, "kind": "done", "status": "succeeded"},
        ],
        "merged 24 tensors\n",
        str(merged),
    )
    conv_start = train_end + 180
    _run(
        root,
        "20251126-182900-convert-b004",
        "convert",
        conv_start,
        conv_start + 12,
        "failed",
        1,
        [
            {"time": conv_start + 1, "kind": "start", "pid": 4242},
            {"time": conv_start + 2, "kind": "progress", "done": 3, "total": 24, "unit": "tensors"},
            {
                "time": conv_start + 11,
                "kind": "error",
                "message": f"no space left on device writing {BUILD}-f16.gguf",
                "hint": "free 15.2 GB on the outputs volume and run convert again",
            },
        ],
        'converting 24 tensors\nTraceback (most recent call last):\n  File "stages/convert_gguf.py", line 90\n'
        "OSError: [Errno 28] No space left on device\n",
        str(out / "gguf" / f"{BUILD}-f16.gguf"),
    )
    stamp = T0 - 3600
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (stamp, stamp))
    for path, when in ((adapter, t + 1500), (merged, train_end + 100), (old_gguf, t - 69960)):
        os.utime(path, (when, when))
    return root / "config.toml"


class FixedSampler:
    """System samples that do not depend on the machine (for snapshots); ``machine``: the Memory & load
    pane's GPU/pressure/power/Ollama figures, scripted from the published macOS fixtures."""

    disk_path = Path("/data")

    def __init__(self) -> None:
        from machine_script import ScriptedMachine, mac_sample

        self.machine = ScriptedMachine(mac_sample(NOW))

    def sample(self) -> SystemSample:
        return self.backfill()[-1]

    def backfill(self) -> list[SystemSample]:
        gb = 1024**3
        return [
            SystemSample(
                NOW - (60 - i) * 2,
                int((18 + 2 * math.sin(i / 6)) * gb),
                32 * gb,
                int(0.5 * gb),
                2 * gb,
                tuple(float((i * 7 + c * 13) % 100) for c in range(8)),
                (2.5, 2.1, 1.9),
                int(120.4 * gb),
                int(494.4 * gb),
                "/Users/me/w4",
            )
            for i in range(60)
        ]
