"""Merge + convert to GGUF: our single streaming pass against the reference path, in the same run.

    .venv/bin/python bench/bench_convert.py [--7b] [--workdir DIR] [--llama-cpp-src DIR] [--keep]

Model: a random Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, ffn 4864, 14 heads, 2 KV heads,
vocab 151936, tied embeddings; bf16, 0.99 GB), or with --7b the Qwen2.5-7B shape (15.2 GB; needs
~65 GB of disk and, for the reference path, ~16 GB of free memory). Adapter: random LoRA r=16,
alpha=32 on all seven projections, as the train stage makes.

Measured, each in its own process (wall time; peak RSS from wait4):
  ours       python -m stages.convert_gguf --model BASE --adapter ADAPTER --output F16.gguf
             (and without --adapter: the plain conversion, for the floor comparison)
  ours x2    python -m stages.merge_lora ... then convert_gguf on the merged copy (the two-stage pipeline)
  reference  PEFT merge_and_unload() + save_pretrained() (whole model in memory), then llama.cpp's
             convert_hf_to_gguf.py --outtype f16
  floor      copying the base's bytes to a new file (read + write + fsync): no tool can do less I/O
  one pass   convert_gguf --adapter --outtype Q4_K_M (--quant): merge, convert and quantize in one pass
             against our two-step (convert_gguf --adapter to F16, then the quantize stage) and against
             llama-quantize alone on that F16 (llama_model_quantize through the llama_cpp binding, the
             quantize stage's backend here); its output must be byte-identical to the two-step's
Targets: ours >= 3x faster than the reference, peak RSS <= 15% of the model's bytes, within 2x of the floor;
one pass <= 0.7x our two-step and <= 1.2x llama-quantize alone, peak extra disk <= 1.05x the Q4_K_M file.
The page cache is warmed first so every contender reads from memory; the floor and ours run --repeat
times (median), the slow reference once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from core import units  # noqa: E402
from stages.weights.streaming import WORKERS  # noqa: E402
from w4tui.demo.tinymodel import SHAPES, build_model  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

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

# A child's ru_maxrss starts at its parent's RSS at fork (Linux keeps the high-water mark across
# exec), so each command is started by this small launcher instead of by the bench process itself.
LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nmaxrss_kib={usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""

FLOOR_COPY = """
import os, sys
out = open(sys.argv[1], "wb")
for path in sys.argv[2:]:
    with open(path, "rb") as src:
        while chunk := src.read(16 << 20):
            out.write(chunk)
out.flush(); os.fsync(out.fileno()); out.close()
"""


LLAMA_QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def make_adapter(base: Path, out: Path, rank: int = 16, alpha: int = 32, seed: int = 1) -> Path:
    """A random PEFT LoRA adapter in the exact on-disk format PEFT's save_pretrained writes."""
    from safetensors.numpy import save_file

    from w4tui.demo.tinymodel import tensor_shapes

    config = json.loads((base / "config.json").read_text())
    shape = next(
        s for s in SHAPES.values() if s.hidden == config["hidden_size"] and s.layers == config["num_hidden_layers"]
    )
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (rows, cols) in (
        (n, s) for n, s in tensor_shapes(shape) if n.endswith(".weight") and n.split(".")[-2] in TARGETS
    ):
        module = "base_model.model." + name.removesuffix(".weight")
        tensors[module + ".lora_A.weight"] = rng.standard_normal((rank, cols), dtype=np.float32) / np.float32(
            np.sqrt(cols)
        )
        tensors[module + ".lora_B.weight"] = 0.01 * rng.standard_normal((rows, rank), dtype=np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base),
                "r": rank,
                "lora_alpha": alpha,
                "lora_dropout": 0.0,
                "target_modules": list(TARGETS),
                "bias": "none",
                "fan_in_fan_out": False,
                "use_rslora": False,
                "use_dora": False,
                "inference_mode": True,
            },
            indent=2,
        )
    )
    return out


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one command; fails loudly if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, int(proc.stderr.rsplit("maxrss_kib=", 1)[1]) * 1024  # Linux reports KiB


def repeated(n: int, cmd: list[str], out: Path, env: dict | None = None, keep: bool = False) -> tuple[float, int]:
    """The median wall time (and the largest peak RSS) of n runs writing ``out`` ("{out}" in cmd):
    a single fsync-bound run can be off by a factor of two on a shared disk."""
    runs = []
    for i in range(n):
        runs.append(measure([str(out) if part == "{out}" else part for part in cmd], env=env))
        if not (keep and i == n - 1):
            out.unlink()
    return sorted(w for w, _ in runs)[n // 2], max(r for _, r in runs)


def disk_peak(cmd: list[str], directory: Path, env: dict) -> tuple[float, int]:
    """(wall seconds, peak bytes added to ``directory``) of one command, sampled every 20 ms."""
    before = du(directory)
    with tempfile.TemporaryFile("w+") as log:  # not a pipe: llama.cpp's log would fill it and block
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=ROOT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, du(directory))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read()[-3000:]}")
    return wall, max(peak, du(directory)) - before


def du(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # renamed or removed while we looked
                pass
    return total


def one_pass(args, base: Path, adapter: Path, out: Path, env: dict) -> None:
    """The one-pass quantized convert against our two-step and llama-quantize alone, in this run."""
    py, q = sys.executable, args.quant
    convert = [py, "-m", "stages.convert_gguf", "--model", str(base), "--adapter", str(adapter), "--output"]
    rows = []
    for i in range(args.repeat):  # interleaved, so a busy moment on a shared host hits all three alike
        one = disk_peak([*convert, str(out / "one.gguf"), "--outtype", q], out, env)
        f16 = disk_peak([*convert, str(out / "two-f16.gguf")], out, env)
        quant = disk_peak(
            [py, "-m", "stages.quantize", "--input", str(out / "two-f16.gguf"), "--output", str(out / "two.gguf")]
            + ["--type", q],
            out,
            env,
        )
        alone = disk_peak([py, "-c", LLAMA_QUANTIZE, str(out / "two-f16.gguf"), str(out / "alone.gguf"), q], out, env)
        same = (out / "one.gguf").read_bytes() == (out / "two.gguf").read_bytes() == (out / "alone.gguf").read_bytes()
        size = (out / "one.gguf").stat().st_size
        rows.append((one, f16, quant, alone, same, size))
        for name in ("one.gguf", "two-f16.gguf", "two.gguf", "alone.gguf"):
            (out / name).unlink()
    med = lambda k: sorted(r[k][0] for r in rows)[len(rows) // 2]  # noqa: E731
    one_s, f16_s, quant_s, alone_s = med(0), med(1), med(2), med(3)
    size = rows[0][5]
    one_disk = max(r[0][1] for r in rows)
    two_disk = max(r[1][1] + r[2][1] for r in rows)  # the F16 stays while quantize writes
    print(f"\none pass to {q} (median of {args.repeat}; {WORKERS} workers):")
    print(f"{'':44} {'wall s':>8} {'peak extra disk':>16}")
    for label, wall, disk in (
        (f"one pass: convert_gguf --adapter --outtype {q}", one_s, one_disk),
        ("two-step: convert_gguf --adapter (F16)", f16_s, None),
        (f"two-step: quantize stage --type {q}", quant_s, None),
        ("two-step total", f16_s + quant_s, two_disk),
        ("llama-quantize alone on the F16", alone_s, None),
    ):
        print(f"{label:44} {wall:8.2f} {units.size(disk) if disk is not None else '':>16}")
    print(
        f"one pass: {one_s / (f16_s + quant_s):.2f}x our two-step's time (target <= 0.7x), "
        f"{one_s / alone_s:.2f}x llama-quantize alone on the F16 (target <= 1.2x); peak extra disk "
        f"{one_disk / size:.3f}x the {q} file ({units.size(size)}; target <= 1.05x), two-step "
        f"{two_disk / size:.2f}x; byte-identical to the two-step and to llama-quantize: "
        f"{all(r[4] for r in rows)}"
    )


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(64 << 20):
                pass


def tensor_digests(path: Path) -> dict[str, tuple]:
    from gguf_fast import read_gguf

    return {name: (t.type, t.shape, hashlib.sha256(t.data).hexdigest()) for name, t in read_gguf(path).tensors.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--7b", dest="big", action="store_true", help="the 7B shape (15.2 GB) instead of 0.5B")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/w4tui-bench"))
    parser.add_argument(
        "--llama-cpp-src",
        type=Path,
        default=os.environ.get("W4TUI_LLAMA_CPP_SRC"),
        help="llama.cpp source root with convert_hf_to_gguf.py (default: $W4TUI_LLAMA_CPP_SRC)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floor and of ours (median; default 3)")
    parser.add_argument(
        "--ours-only", action="store_true", help="skip the reference path (it holds the whole model in memory)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the outputs (the models are always kept)")
    parser.add_argument("--quant", default="Q4_K_M", help="the one-pass file type (default Q4_K_M)")
    parser.add_argument("--one-pass-only", action="store_true", help="only the one-pass comparison")
    args = parser.parse_args()
    if not (args.ours_only or args.one_pass_only) and (
        not args.llama_cpp_src or not (args.llama_cpp_src / "convert_hf_to_gguf.py").is_file()
    ):
        parser.error("needs llama.cpp's converter: --llama-cpp-src DIR or W4TUI_LLAMA_CPP_SRC")
    shape = "7b" if args.big else "0.5b"
    base = args.workdir / f"qwen2-{shape}"
    if not base.exists():
        print(f"building the random {shape} model in {base} ...", flush=True)
        build_model(base, shape, seed=0, shards=4 if args.big else 1)
    adapter = make_adapter(base, args.workdir / f"adapter-{shape}")
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shards = sorted(base.glob("*.safetensors"))
    model_bytes = sum(p.stat().st_size for p in shards)
    free = shutil.disk_usage(args.workdir).free
    if free < 2.1 * model_bytes:  # beside the base: at most two model-sized files at a time
        raise SystemExit(f"{args.workdir}: {units.size(free)} free, needs {units.size(2.1 * model_bytes)}")
    warm(shards + [adapter / "adapter_model.safetensors"])
    py = sys.executable
    quiet = dict(os.environ, W4TUI_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))

    if args.one_pass_only:
        one_pass(args, base, adapter, out, quiet)
        shutil.rmtree(out)
        return 0
    ours_cmd = [py, "-m", "stages.convert_gguf", "--model", str(base), "--adapter", str(adapter), "--output"]
    rows = []
    floor = repeated(args.repeat, [py, "-c", FLOOR_COPY, "{out}", *map(str, shards)], out / "copy.bin")
    ours = repeated(args.repeat, [*ours_cmd, "{out}"], out / "ours.gguf", env=quiet, keep=True)
    ours_digests = tensor_digests(out / "ours.gguf")  # compared with the reference's once ours is deleted
    if not args.keep:
        (out / "ours.gguf").unlink()
    plain = repeated(
        args.repeat,
        [py, "-m", "stages.convert_gguf", "--model", str(base), "--output", "{out}"],
        out / "plain.gguf",
        env=quiet,
    )
    rows += [
        ("floor: copy the bytes", *floor),
        ("ours: convert_gguf --adapter", *ours),
        ("ours: convert_gguf, no adapter", *plain),
    ]
    m = measure(
        [
            py,
            "-m",
            "stages.merge_lora",
            "--adapter",
            str(adapter),
            "--base_model",
            str(base),
            "--output",
            str(out / "ours-merged"),
        ],
        env=quiet,
    )
    c = measure(
        [py, "-m", "stages.convert_gguf", "--model", str(out / "ours-merged"), "--output", str(out / "ours2.gguf")],
        env=quiet,
    )
    rows += [("ours: merge_lora", *m), ("ours: convert_gguf (merged)", *c)]
    shutil.rmtree(out / "ours-merged")
    (out / "ours2.gguf").unlink()
    two_wall, two_rss = m[0] + c[0], max(m[1], c[1])
    if not args.ours_only:
        rm = measure([py, "-c", REFERENCE_MERGE, str(base), str(adapter), str(out / "ref-merged")])
        rc = measure(
            [
                py,
                str(args.llama_cpp_src / "convert_hf_to_gguf.py"),
                str(out / "ref-merged"),
                "--outfile",
                str(out / "ref.gguf"),
                "--outtype",
                "f16",
            ]
        )
        rows += [("reference: PEFT merge + save", *rm), ("reference: convert_hf_to_gguf", *rc)]
        shutil.rmtree(out / "ref-merged")
        ref_wall, ref_rss = rm[0] + rc[0], max(rm[1], rc[1])
        rows.append(("reference total", ref_wall, ref_rss))
    rows.append(("ours two-stage total", two_wall, two_rss))

    print(
        f"\nmodel: Qwen2 {shape}-shaped, {units.size(model_bytes)} bf16; adapter r=16 on 7 projections; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'':34} {'wall s':>8} {'peak RSS':>10} {'RSS/model':>10}")
    for label, wall, rss in rows:
        print(f"{label:34} {wall:8.2f} {units.size(rss):>10} {rss / model_bytes:10.1%}")
    print(
        f"\nours: peak RSS {ours[1] / model_bytes:.1%} of the model (target <= 15%), "
        f"{ours[0] / floor[0]:.2f}x the copy floor's time (target <= 2x); without an adapter "
        f"{plain[0] / floor[0]:.2f}x"
    )
    if not args.ours_only:
        print(
            f"ours vs reference: {ref_wall / ours[0]:.1f}x faster (target >= 3x), peak RSS "
            f"{ref_rss / ours[1]:.0f}x smaller; ours two-stage {ref_wall / two_wall:.1f}x faster"
        )
        theirs = tensor_digests(out / "ref.gguf")
        same = sum(1 for name, digest in theirs.items() if ours_digests.get(name) == digest)
        print(f"ours vs reference output: {same}/{len(theirs)} tensors byte-identical ({len(ours_digests)} in ours)")
    one_pass(args, base, adapter, out, quiet)
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
