"""convert --outtype Q4_K_M (and the other llama.cpp file types): the quantized GGUF in one pass from
base + adapter, byte for byte what llama_model_quantize (the llama_cpp binding, as stages.quant runs
it) makes from our F16 GGUF, on the tiny model and on one whose rows force llama.cpp's fallbacks."""

from __future__ import annotations

import contextlib
import ctypes
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf_fast import read_gguf
from peft_adapters import make_adapter

from stages import quantize
from stages.convert_gguf import main as convert_main
from w4tui.demo.tinymodel import Shape, build_model

pytest_plugins = ["ollama_fixtures"]
pytestmark = pytest.mark.skipif(not quantize.has_binding(), reason="llama-cpp-python not installed")
TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M")
# Qwen2.5-0.5B's widths scaled down: hidden 896 is not a multiple of 256 (every projection reading it
# falls back to a 32-block type, the tied embedding to Q8_0), the FFN width 4864 is (ffn_down keeps its
# K-quant mix, which 8 layers spread over Q4_K / Q6_K)
FALLBACK = Shape(hidden=192, layers=8, ffn=512, heads=3, kv_heads=1, tied=True)
# Keys that record how the file was made and may differ between the two paths: none. The one-pass file
# is the same file to the last byte; how it was made is in the convert run's artifact event instead.
MAY_DIFFER: tuple[str, ...] = ()
PROMPT = [151644, 872, 198, 4021, 264, 393, 5626, 32, 369, 3692, 9688, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def fallback_model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("fallback") / "m192", FALLBACK, shards=1)


def convert(model: Path, out: Path, outtype: str, adapter: Path | None) -> None:
    args = ["--model", str(model), "--output", str(out), "--outtype", outtype]
    with contextlib.redirect_stderr(io.StringIO()):
        assert convert_main(args + (["--adapter", str(adapter)] if adapter else [])) == 0


def llama_quantize(f16: Path, out: Path, qtype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params)) == 0


def first_difference(a: Path, b: Path) -> str:
    """Where two GGUFs part: a key or a tensor, for a failure a person can act on."""
    ga, gb = read_gguf(a), read_gguf(b)
    if [k for k in ga.kv_order if k not in MAY_DIFFER] != [k for k in gb.kv_order if k not in MAY_DIFFER]:
        return f"key order: {ga.kv_order} vs {gb.kv_order}"
    for key in ga.kv_order:
        if key not in MAY_DIFFER and ga.kv[key] != gb.kv[key]:
            return f"key {key}: {ga.kv[key]} vs {gb.kv[key]}"
    for ta, tb in zip(ga.tensors.values(), gb.tensors.values()):
        if (ta.name, ta.type) != (tb.name, tb.type) or bytes(ta.data) != bytes(tb.data):
            return f"tensor {ta.name} ({ta.type.name}) vs {tb.name} ({tb.type.name})"
    return "layout (offsets or padding)"


# In a child process: a crash in llama.cpp would take the whole test session down. open_llama keeps
# llama.cpp off its AMX path, which segfaults on CPUs that have AMX (llama.cpp#20824).
SCORES = """
import sys, numpy as np
from stages.evaluation.llama_run import open_llama
m = open_llama(model_path=sys.argv[1], logits_all=True, n_ctx=64, n_threads=2, verbose=False)
m.eval([int(t) for t in sys.argv[3:]])
np.save(sys.argv[2], np.array(m.scores[: len(sys.argv) - 3]))
"""


def scores(path: Path) -> np.ndarray:
    out = path.with_suffix(".npy")
    subprocess.run([sys.executable, "-c", SCORES, str(path), str(out), *map(str, PROMPT)], check=True)
    return np.load(out)


@pytest.mark.parametrize("which", ["tiny", "tiny+adapter", "fallback", "fallback+adapter"])
def test_one_pass_is_byte_identical_to_llama_quantize_of_our_f16(
    which, tmp_path, config_file, tiny_model, fallback_model, run_stage
):
    model = tiny_model if which.startswith("tiny") else fallback_model
    adapter = None
    if which.endswith("adapter"):  # "full": embedding and lm_head LoRA, a saved norm, trained biases
        adapter = make_adapter(model, tmp_path.parent / "adapters", "full" if which.startswith("tiny") else "plain")
    f16 = tmp_path / "m-f16.gguf"
    convert(model, f16, "f16", adapter)
    # an adapter changes the rows, not the type mix (covered without one): three types suffice there
    for qtype in ("Q8_0", "Q4_K_M", "Q3_K_M") if adapter else TYPES:
        two_step, one_pass = tmp_path / f"two-{qtype}.gguf", tmp_path / f"one-{qtype}.gguf"
        llama_quantize(f16, two_step, qtype)
        convert(model, one_pass, qtype, adapter)
        assert one_pass.read_bytes() == two_step.read_bytes(), f"{qtype}: {first_difference(one_pass, two_step)}"
    if which == "fallback":  # the fallbacks really happened, and the run says how many
        types = {name: t.type.name for name, t in read_gguf(tmp_path / "one-Q4_K_M.gguf").tensors.items()}
        assert (types["blk.0.attn_q.weight"], types["token_embd.weight"]) == ("Q5_0", "Q8_0")
        assert [types[f"blk.{i}.ffn_down.weight"] for i in range(8)] == ["Q6_K", "Q4_K", "Q4_K", "Q6_K"] + [
            "Q4_K",
            "Q4_K",
            "Q6_K",
            "Q6_K",
        ]
        result = run_stage("convert_gguf", "--model", model, "--output", tmp_path / "ev.gguf", "--outtype", "Q4_K_M")
        assert result.artifact["quant"] == "Q4_K_M" and result.artifact["quantized_from"] == "F16"
        assert result.artifact["fallback_tensors"] == 6 * 8  # q, k, v, o, gate, up of every layer
        progress = result.of("progress")
        data = sum(len(t.data) for t in read_gguf(tmp_path / "ev.gguf").tensors.values())
        assert progress[-1]["done"] == progress[-1]["total"] == data and progress[-1]["unit"] == "bytes"
        assert progress[-1]["tensors_done"] == progress[-1]["tensors_total"] == 8 * 12 + 2
    if which == "tiny+adapter":  # llama.cpp loads it and computes what the two-step file computes
        assert np.array_equal(scores(tmp_path / "one-Q4_K_M.gguf"), scores(tmp_path / "two-Q4_K_M.gguf"))
