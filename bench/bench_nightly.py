"""One night, timed per step, against the same build done the way the seed documented it, in the same run.

    .venv/bin/python bench/bench_nightly.py [--workdir DIR] [--samples 50] [--llama-cpp-src DIR]

Model: a random Qwen2.5-0.5B-shaped model (the tiny-model builder's "0.5b": hidden 896, 24 layers, bf16,
0.99 GB) and an incremental file of --samples Web4 chats (the demo's generator). Ollama: the tests'
stand-in on 127.0.0.1 (deploy uploads the real GGUF to it; verify streams its answers).

  ours       `w4tui nightly --now`: train (1 epoch) > convert --adapter from the base (one pass, no merged
             copy) > quantize Q4_K_M > deploy > verify --promote > retention; per step from the ledger
  reference  the seed's commands on the night's own adapter: PEFT merge_and_unload() + save_pretrained(),
             llama.cpp's convert_hf_to_gguf.py --outtype f16, then the same quantizer; deploy and verify
             are the same commands for both, so the reference is charged ours for them
Disk: the outputs directory is sampled every 0.1 s; peak extra bytes over its size before the night.
Targets: the night without training >= 3x faster than the reference; peak extra disk <= 1.1x the F16 GGUF.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.units import size

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from ollama_standin import OllamaStandIn  # noqa: E402

from core.config import load_config  # noqa: E402
from w4tui.demo.samples import write_dataset  # noqa: E402
from w4tui.demo.tinymodel import build_model  # noqa: E402
from w4tui.nightly.ledger import Ledger  # noqa: E402
from w4tui.nightly.record import dir_bytes  # noqa: E402

REFERENCE_MERGE = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base, adapter, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out)
AutoTokenizer.from_pretrained(base).save_pretrained(out)
"""

CONFIG = """
[model]
base = "{base}"
dir = "{base}"
[train]
max_seq_length = {seq}
batch_size = 4
gradient_accumulation = 1
gradient_checkpointing = false
eval_fraction = 0.0
checkpoint_every = 1000
device = "cpu"
[verify]
num_predict = 64
"""


class DiskPeak:
    """The largest size ``path`` reaches while the block runs, sampled in a thread."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak, self._stop = path, 0, threading.Event()

    def __enter__(self) -> DiskPeak:
        self.before = dir_bytes(self.path) if self.path.exists() else 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, dir_bytes(self.path) if self.path.exists() else 0)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, dir_bytes(self.path) if self.path.exists() else 0)

    @property
    def extra(self) -> int:
        return self.peak - self.before


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def wait_for_no_training(limit_s: float = 900) -> None:
    import psutil

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy = [p for p in psutil.process_iter(["cmdline"]) if "stages.train_lora" in " ".join(p.info["cmdline"] or [])]
        if not busy:
            return
        time.sleep(2)
    raise SystemExit("another training kept running for 15 minutes; try again when the machine is free")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/w4tui-bench-nightly"))
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--max-seq", type=int, default=64, help="tokens per sample (training cost only)")
    parser.add_argument("--llama-cpp-src", type=Path, default=os.environ.get("W4TUI_LLAMA_CPP_SRC"))
    args = parser.parse_args()
    if not args.llama_cpp_src or not (args.llama_cpp_src / "convert_hf_to_gguf.py").is_file():
        parser.error("needs llama.cpp's converter: --llama-cpp-src DIR or W4TUI_LLAMA_CPP_SRC")
    base = args.workdir / "qwen2-0.5b"
    if not (base / "config.json").exists():
        print(f"building the random 0.5b model in {base} ...", flush=True)
        build_model(base, "0.5b", seed=0, shards=1)
    ws = args.workdir / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    (ws / "config.toml").write_text(CONFIG.format(base=base, seq=args.max_seq))
    write_dataset(ws / "data" / "train" / "main.jsonl", 200, seed=1)
    write_dataset(ws / "data" / "incoming" / "incremental_2026-12-01.jsonl", args.samples, seed=2)
    config = load_config(ws / "config.toml")
    config.paths.outputs.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), W4TUI_LOG_LEVEL="WARNING")

    with OllamaStandIn() as ollama:
        ollama.add_library_model()
        env["OLLAMA_HOST"] = ollama.url
        wait_for_no_training()  # the pre-flight refuses a second training on the machine (shared bench hosts)
        with DiskPeak(config.paths.outputs) as disk:
            night_s = timed(
                [sys.executable, "-m", "w4tui", "--config", str(ws / "config.toml"), "nightly", "--now"], env
            )
    ledger = Ledger.open(config)
    night = ledger.nights()[0]
    build = ledger.build(night["build"])
    steps = {s["step"]: s["ended"] - s["started"] for s in night["steps"]}
    f16 = build["sizes"]["f16"]

    ref = args.workdir / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir()
    with DiskPeak(ref) as ref_disk:
        merge_s = timed([sys.executable, "-c", REFERENCE_MERGE, str(base), build["adapter"], str(ref / "merged")], env)
        convert_s = timed(
            [
                sys.executable,
                str(args.llama_cpp_src / "convert_hf_to_gguf.py"),
                str(ref / "merged"),
                "--outfile",
                str(ref / "ref-f16.gguf"),
                "--outtype",
                "f16",
            ],
            env,
        )
        quant_s = timed(
            [
                sys.executable,
                "-m",
                "stages.quantize",
                "--input",
                str(ref / "ref-f16.gguf"),
                "--output",
                str(ref / "ref-Q4_K_M.gguf"),
                "--type",
                "Q4_K_M",
            ],
            env,
        )

    shared = steps["deploy"] + steps["verify"]
    ours_build = steps["convert"] + steps["quantize"] + shared
    ref_build = merge_s + convert_s + quant_s + shared
    print(
        f"\nmodel: Qwen2 0.5b-shaped, {size(dir_bytes(base))}; {args.samples} samples of <= {args.max_seq} "
        f"tokens; {os.cpu_count()} CPUs; outcome {night['outcome']}"
    )
    print(f"{'step':28} {'ours s':>8} {'reference s':>12}")
    rows = [
        ("train (same for both)", steps["train"], steps["train"]),
        ("merge + save (PEFT)", 0.0, merge_s),
        ("convert to F16 GGUF", steps["convert"], convert_s),
        ("quantize Q4_K_M", steps["quantize"], quant_s),
        ("deploy", steps["deploy"], steps["deploy"]),
        ("verify --promote", steps["verify"], steps["verify"]),
    ]
    for label, ours, theirs in rows:
        print(f"{label:28} {ours:8.2f} {theirs:12.2f}")
    print(f"{'night, `nightly --now` wall':28} {night_s:8.2f}")
    print(
        f"\nwithout training: ours {ours_build:.2f} s, reference {ref_build:.2f} s: "
        f"{ref_build / ours_build:.2f}x faster (target >= 3x)"
    )
    print(
        f"peak extra disk: ours {size(disk.extra)} = {disk.extra / f16:.2f}x the F16 GGUF "
        f"({size(f16)}; target <= 1.1x); reference {size(ref_disk.extra)} = {ref_disk.extra / f16:.2f}x"
    )
    shutil.rmtree(ref, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
