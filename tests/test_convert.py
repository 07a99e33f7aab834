"""Merge and convert fidelity on the tiny Qwen2 model: PEFT's merge, llama.cpp's converter, llama.cpp's logits."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from w4tui.events import read_events

pytestmark = pytest.mark.slow
PROMPT = [151644, 872, 198, 4021, 264, 393, 5626, 32, 369, 3692, 9688, 151645, 198, 151644, 77091, 198]
LLAMA_SRC = os.environ.get("W4TUI_LLAMA_CPP_SRC")


def stage(module, *args, tmp_path):
    env = dict(os.environ, W4TUI_EVENTS=str(tmp_path / f"{module}.jsonl"), W4TUI_RUN_ID="t")
    proc = subprocess.run([sys.executable, "-m", f"stages.{module}", *map(str, args)], capture_output=True, text=True,
                          env=env)
    return proc, read_events(tmp_path / f"{module}.jsonl")


def make_adapter(base: Path, out: Path, **lora) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        **lora)
    peft = get_peft_model(model, config)
    with torch.no_grad():  # random B is small next to W: a realistic trained adapter
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("adapters")
    return {"plain": make_adapter(tiny_model, root / "plain"),
            "rslora": make_adapter(tiny_model, root / "rslora", use_rslora=True,
                                   rank_pattern={"down_proj": 4}, alpha_pattern={"o_proj": 64})}


def peft_merged(base, adapter, dtype=torch.bfloat16):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


@pytest.mark.parametrize("kind", ["plain", "rslora"])
def test_streaming_merge_equals_peft_merge_and_unload(tmp_path, tiny_model, adapters, kind):
    from safetensors.torch import load_file

    out = tmp_path / "merged"
    proc, events = stage("merge_lora", "--adapter", adapters[kind], "--base_model", tiny_model, "--output", out,
                         tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = peft_merged(tiny_model, adapters[kind]).state_dict()
    got = {}
    for shard in sorted(out.glob("*.safetensors")):
        got.update(load_file(shard))
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, expected[name]), name  # bit for bit
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        assert (out / name).read_bytes() == (tiny_model / name).read_bytes()
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "merged" and artifact["parent"] == str(adapters[kind])
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["tensors_done"] == progress[-1]["tensors_total"] == 27


def test_fan_in_fan_out_adds_the_transposed_delta(tmp_path):
    from safetensors.numpy import save_file

    from stages.lora_merge import Adapter, merged_rows
    from stages.safetensors_stream import scan

    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)  # Conv1D layout: (in, out)
    a, b = rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)
    save_file({"c_attn.weight": w}, str(tmp_path / "base.safetensors"))
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    save_file({"base_model.model.c_attn.lora_A.weight": a, "base_model.model.c_attn.lora_B.weight": b},
              str(adapter_dir / "adapter_model.safetensors"))
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "fan_in_fan_out": True}))
    adapter = Adapter(adapter_dir)
    ref = scan(tmp_path / "base.safetensors")[0]
    adapter.check_fits({ref.name: ref})
    with open(ref.file, "rb") as fh:
        merged = np.concatenate([merged_rows(adapter, ref, fh, 0, 3), merged_rows(adapter, ref, fh, 3, 6)])
    np.testing.assert_allclose(merged, w + (b @ a).T * 2.0, rtol=1e-6)


def reference_converter(model: Path, out: Path, outtype: str) -> Path:
    script = Path(LLAMA_SRC) / "convert_hf_to_gguf.py"
    env = dict(os.environ, PYTHONPATH=str(Path(LLAMA_SRC) / "gguf-py"))
    proc = subprocess.run([sys.executable, str(script), str(model), "--outfile", str(out), "--outtype", outtype],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


# Keys that differ from llama.cpp's converter, on purpose:
# general.name: named after the output file (the build), not guessed from the directory name;
# general.size_label: not written (a display string llama.cpp does not use);
# general.base_model.* and w4tui.*: lineage that llama.cpp's converter cannot know.
EXPLAINED = {"general.name", "general.size_label", "GGUF.kv_count"}


@pytest.mark.skipif(not LLAMA_SRC or not Path(LLAMA_SRC, "convert_hf_to_gguf.py").exists(),
                    reason="llama.cpp's converter not found: set W4TUI_LLAMA_CPP_SRC (scripts/test.sh does)")
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_gguf_equals_llama_cpp_converter_key_for_key_and_tensor_for_tensor(tmp_path, tiny_model, outtype):
    from gguf import GGUFReader

    ours = tmp_path / "ours.gguf"
    proc, _ = stage("convert_gguf", "--model", tiny_model, "--output", ours, "--outtype", outtype, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    theirs = GGUFReader(reference_converter(tiny_model, tmp_path / "ref.gguf", outtype))
    ours = GGUFReader(ours)
    extra = {k for k in ours.fields if k.startswith(("w4tui.", "general.base_model."))}
    assert set(ours.fields) - extra - EXPLAINED == set(theirs.fields) - EXPLAINED
    for key in set(theirs.fields) - EXPLAINED:
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
    ref_tensors = {t.name: t for t in theirs.tensors}
    assert [t.name for t in ours.tensors] and {t.name for t in ours.tensors} == set(ref_tensors)
    for t in ours.tensors:
        r = ref_tensors[t.name]
        assert (t.tensor_type, list(t.shape)) == (r.tensor_type, list(r.shape)), t.name
        assert np.array_equal(t.data, r.data), t.name


def llama_logits(path: Path) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install -e '.[llama]')")
    model = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False)
    model.eval(PROMPT)
    return np.array(model.scores[:len(PROMPT)])


def hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model.float()(torch.tensor([PROMPT])).logits[0].numpy()


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_llama_cpp_loads_the_gguf_and_matches_transformers(tmp_path, tiny_model, outtype):
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"m-{outtype}.gguf"
    proc, events = stage("convert_gguf", "--model", tiny_model, "--output", out, "--outtype", outtype, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours = llama_logits(out)
    expected = hf_logits(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    assert np.abs(ours - expected).max() / np.abs(expected).max() < 1e-3
    assert (ours.argmax(-1) == expected.argmax(-1)).all()
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "gguf" and artifact["quant"] == outtype.upper() and artifact["path"] == str(out)


def test_adapter_merged_on_the_fly_matches_peft(tmp_path, tiny_model, adapters):
    out = tmp_path / "nightly.gguf"
    proc, events = stage("convert_gguf", "--model", tiny_model, "--adapter", adapters["plain"], "--output", out,
                         "--outtype", "f32", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours = llama_logits(out)
    expected = hf_logits(peft_merged(tiny_model, adapters["plain"]))
    base = hf_logits(peft_merged(tiny_model, adapters["plain"]).__class__.from_pretrained(tiny_model))
    assert np.abs(ours - expected).max() / np.abs(expected).max() < 1e-3
    assert np.abs(expected - base).max() > 10 * np.abs(ours - expected).max()  # the adapter really is in there
    from gguf import GGUFReader

    fields = GGUFReader(out).fields
    assert fields["w4tui.adapter"].contents() == str(adapters["plain"])
    assert next(e for e in events if e["kind"] == "artifact")["adapter"] == str(adapters["plain"])


def test_user_errors_are_one_line_and_leave_no_file(tmp_path, tiny_model, adapters):
    def convert(model, *extra):
        out = tmp_path / "x.gguf"
        proc, _ = stage("convert_gguf", "--model", model, "--output", out, *extra, tmp_path=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and not out.exists()
        assert not list(tmp_path.glob(".x.gguf*"))
        return proc.stderr.strip()

    llama = tmp_path / "llama"
    shutil.copytree(tiny_model, llama)
    config = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))
    assert "unsupported architecture MistralForCausalLM" in convert(llama)

    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model, no_tok)
    (no_tok / "tokenizer.json").unlink()
    assert "missing tokenizer files: tokenizer.json" in convert(no_tok)

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model, truncated)
    shard = truncated / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    assert "truncated or corrupt" in convert(truncated) and shard.name in convert(truncated)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model, corrupt)
    shard = corrupt / "model-00001-of-00002.safetensors"
    shard.write_bytes(b"\xff" * 16 + shard.read_bytes()[16:])
    assert "corrupt safetensors header" in convert(corrupt)

    from w4tui.tinymodel import Shape, build_model

    other = build_model(tmp_path / "other", Shape(hidden=32, heads=2, kv_heads=1, ffn=64))
    message = convert(other, "--adapter", adapters["plain"])
    assert re.search(r"adapter does not fit the base: model\.layers\.\d+\.\S+ is \[\d+, \d+\] in the base "
                     r"but \[\d+, \d+\] in \S+plain \(was it trained on another base model\?\)$", message)


def test_llama_cpp_converter_can_be_chosen(tmp_path, tiny_model):
    if not LLAMA_SRC:
        pytest.skip("llama.cpp's converter not found: set W4TUI_LLAMA_CPP_SRC (scripts/test.sh does)")
    config = tmp_path / "config.toml"
    config.write_text(f'[tools]\nconvert_hf_to_gguf = "{Path(LLAMA_SRC) / "convert_hf_to_gguf.py"}"\n')
    env = {"W4TUI_CONFIG": str(config), "PYTHONPATH": str(Path(LLAMA_SRC) / "gguf-py")}
    out = tmp_path / "ref.gguf"
    proc = subprocess.run([sys.executable, "-m", "stages.convert_gguf", "--model", str(tiny_model), "--output", str(out),
                           "--converter", "llama.cpp"], capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 30_000_000
