"""The GGUF converter on the tiny Qwen2 model: equal to llama.cpp's own converter key for key and tensor
for tensor, loaded by llama.cpp with the logits of transformers, --adapter equal to merge-then-convert."""

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
from gguf_fast import read_gguf
from peft_adapters import make_adapter, peft_merged, stage

from stages.evaluation.llama_run import open_llama  # llama.cpp without its AMX path (#20824)

pytestmark = pytest.mark.slow
LLAMA_SRC = os.environ.get("W4TUI_LLAMA_CPP_SRC")
needs_reference = pytest.mark.skipif(
    not LLAMA_SRC or not Path(LLAMA_SRC, "convert_hf_to_gguf.py").exists(),
    reason="llama.cpp's converter not found: set W4TUI_LLAMA_CPP_SRC to llama.cpp's source root (scripts/test.sh does)",
)
# <|im_start|>user\nWrite a Web4 agent...<|im_end|>\n<|im_start|>assistant\n
PROMPT = [151644, 872, 198, 4021, 264, 393, 5626, 32, 369, 3692, 9688, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def adapter_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "peft-adapters"


def convert(tmp_path, model, out, *extra):
    proc, events = stage("convert_gguf", "--model", model, "--output", out, *extra, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return events


def reference_converter(model: Path, out: Path, outtype: str) -> Path:
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(LLAMA_SRC) / "convert_hf_to_gguf.py"),
            str(model),
            "--outfile",
            str(out),
            "--outtype",
            outtype,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


# Where we differ from llama.cpp's converter, on purpose:
# - general.name: the model's (or adapter's) folder name as is; llama.cpp title-cases a guess from it
# - w4tui.*: lineage (base model and adapter paths), which llama.cpp's converter cannot know
# - tensor order: ours is the order of the safetensors files, llama.cpp's sorted by name; readers look
#   tensors up by name, so only the comparison below is order-free.
EXPLAINED = {"general.name"}


@needs_reference
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_gguf_equals_llama_cpp_converter_key_for_key_and_tensor_for_tensor(tmp_path, tiny_model, outtype):
    convert(tmp_path, tiny_model, tmp_path / "ours.gguf", "--outtype", outtype)
    ours = read_gguf(tmp_path / "ours.gguf")
    theirs = read_gguf(reference_converter(tiny_model, tmp_path / "ref.gguf", outtype))
    assert {k for k in ours.kv if not k.startswith("w4tui.")} == set(theirs.kv)
    for key in set(theirs.kv) - EXPLAINED:
        assert ours.kv[key] == theirs.kv[key], key
    assert ours.kv["general.name"] == tiny_model.name and ours.kv["w4tui.base_model"] == str(tiny_model)
    assert ours.tensors.keys() == theirs.tensors.keys() and len(ours.tensors) == 27
    for name, t in ours.tensors.items():
        r = theirs.tensors[name]
        assert (t.type, t.shape) == (r.type, r.shape), name
        assert t.data == r.data, name  # byte for byte


def test_gguf_has_what_llama_cpp_needs(tmp_path, tiny_model):
    """The same facts, checked without the reference: hyper-parameters, tokenizer, template, types."""
    events = convert(tmp_path, tiny_model, tmp_path / "m.gguf")
    kv = read_gguf(tmp_path / "m.gguf").kv
    config = json.loads((tiny_model / "config.json").read_text())
    tok_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert {
        k: kv[f"qwen2.{k}"]
        for k in (
            "block_count",
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
        )
    } == {
        "block_count": 2,
        "context_length": 32768,
        "embedding_length": 64,
        "feed_forward_length": 128,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
    }
    assert kv["qwen2.rope.freq_base"] == config["rope_theta"]
    assert kv["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert (
        kv["general.architecture"],
        kv["general.file_type"],
        kv["tokenizer.ggml.model"],
        kv["tokenizer.ggml.pre"],
    ) == ("qwen2", 1, "gpt2", "qwen2")
    assert len(kv["tokenizer.ggml.tokens"]) == len(kv["tokenizer.ggml.token_type"]) == 151936
    assert kv["tokenizer.ggml.tokens"][151645] == "<|im_end|>" and kv["tokenizer.ggml.token_type"][151645] == 3
    assert len(kv["tokenizer.ggml.merges"]) == 151387
    assert (
        kv["tokenizer.ggml.eos_token_id"],
        kv["tokenizer.ggml.bos_token_id"],
        kv["tokenizer.ggml.padding_token_id"],
        kv["tokenizer.ggml.add_bos_token"],
    ) == (151645, 151643, 151643, False)
    assert kv["tokenizer.chat_template"] == tok_config["chat_template"]
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] > 38_000_000 and progress[-1]["tensors_done"] == 27
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert (artifact["type"], artifact["quant"], artifact["parent"]) == ("gguf", "F16", str(tiny_model))


def test_adapter_on_the_fly_equals_merge_then_convert(tmp_path, tiny_model, adapter_root):
    adapter = make_adapter(tiny_model, adapter_root, "full")  # embeddings and lm_head too
    events = convert(tmp_path, tiny_model, tmp_path / "one-pass.gguf", "--adapter", adapter, "--name", "n")
    proc, _ = stage(
        "merge_lora",
        "--adapter",
        adapter,
        "--base_model",
        tiny_model,
        "--output",
        tmp_path / "merged",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    two_step = convert(tmp_path, tmp_path / "merged", tmp_path / "two-step.gguf", "--name", "n")
    one, two = read_gguf(tmp_path / "one-pass.gguf"), read_gguf(tmp_path / "two-step.gguf")
    assert one.kv == two.kv and one.kv["w4tui.adapter"] == str(adapter)
    assert one.kv["general.base_model.0.name"] == tiny_model.name
    assert {n: (t.type, t.shape, t.data) for n, t in one.tensors.items()} == {
        n: (t.type, t.shape, t.data) for n, t in two.tensors.items()
    }
    assert (
        one.tensors["token_embd.weight"].data
        != read_gguf(convert_plain(tmp_path, tiny_model)).tensors["token_embd.weight"].data
    )
    for produced in (events, two_step):
        artifact = next(e for e in produced if e["kind"] == "artifact")
        assert artifact["adapter"] == str(adapter) and artifact["base_model"] == str(tiny_model)
    assert next(e for e in events if e["kind"] == "artifact")["parent"] == str(adapter)
    proc, _ = stage(
        "convert_gguf",
        "--model",
        tmp_path / "merged",
        "--adapter",
        adapter,
        "--output",
        tmp_path / "twice.gguf",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 1 and "already has an adapter merged in" in proc.stderr


def convert_plain(tmp_path, model):
    out = tmp_path / "plain.gguf"
    if not out.exists():
        convert(tmp_path, model, out)
    return out


def llama(path: Path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install -e '.[test]')")
    return open_llama(model_path=str(path), logits_all=True, n_ctx=64, n_threads=2, verbose=False)


def llama_logits(path: Path) -> np.ndarray:
    model = llama(path)
    model.eval(PROMPT)
    return np.array(model.scores[: len(PROMPT)])


def hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model.float()(torch.tensor([PROMPT])).logits[0].numpy()


def relative_error(ours: np.ndarray, expected: np.ndarray) -> float:
    """Largest logit difference relative to the largest logit: elementwise ratios blow up near zero."""
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("outtype, tolerance", [("f32", 1e-3), ("f16", 1e-3)])
def test_llama_cpp_loads_the_gguf_and_matches_transformers(tmp_path, tiny_model, outtype, tolerance):
    """F32 holds the bf16 weights exactly, so only summation order differs (3e-5 here). F16 holds
    every bf16 weight of this model exactly too, but llama.cpp then rounds activations to f16 for its
    matrix products (2.4e-4 here): both well inside 1e-3."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"m-{outtype}.gguf"
    convert(tmp_path, tiny_model, out, "--outtype", outtype)
    ours = llama_logits(out)
    expected = hf_logits(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    assert relative_error(ours, expected) < tolerance, relative_error(ours, expected)
    assert (ours.argmax(-1) == expected.argmax(-1)).all()


def test_llama_cpp_tokenizes_like_transformers(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    model = llama(convert_plain(tmp_path, tiny_model))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for text in [
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        "Grüße, 世界! 12345 ’quotes’",
        "<|im_start|>user\nhi<|im_end|>\n",
        "  spaces\t\ttabs\r\n\n\nlines",
    ]:
        assert model.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text


def test_adapter_merged_on_the_fly_matches_peft_in_llama_cpp(tmp_path, tiny_model, adapter_root):
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_model, adapter_root, "plain")
    out = tmp_path / "nightly.gguf"
    convert(tmp_path, tiny_model, out, "--adapter", adapter, "--outtype", "f32")
    ours = llama_logits(out)
    expected = hf_logits(peft_merged(tiny_model, adapter))
    base = hf_logits(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    assert relative_error(ours, expected) < 1e-3
    assert np.abs(expected - base).max() > 10 * np.abs(ours - expected).max()  # the adapter really is in there


def test_user_errors_are_one_line_and_leave_no_file(tmp_path, tiny_model, adapter_root):
    adapter = make_adapter(tiny_model, adapter_root, "plain")

    def failing(model, *extra):
        out = tmp_path / "x.gguf"
        proc, events = stage("convert_gguf", "--model", model, "--output", out, *extra, tmp_path=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and not out.exists(), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and events[-1]["kind"] == "error"
        assert not list(tmp_path.glob(".x.gguf*"))
        return proc.stderr.strip()

    def variant(name, edit):
        path = tmp_path / name
        shutil.copytree(tiny_model, path)
        edit(path)
        return path

    def arch(path):
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))

    assert "unsupported architecture MistralForCausalLM" in failing(variant("mistral", arch))

    assert "missing tokenizer files: tokenizer.json" in failing(
        variant("no_tok", lambda p: (p / "tokenizer.json").unlink())
    )

    def truncate(path):
        shard = path / "model-00002-of-00002.safetensors"
        shard.write_bytes(shard.read_bytes()[:-1000])

    message = failing(variant("truncated", truncate))
    assert "truncated or corrupt" in message and "model-00002-of-00002.safetensors" in message

    def corrupt(path):
        shard = path / "model-00001-of-00002.safetensors"
        shard.write_bytes(b"\xff" * 16 + shard.read_bytes()[16:])

    assert "corrupt safetensors header" in failing(variant("corrupt", corrupt))

    from w4tui.demo.tinymodel import Shape, build_model

    other = build_model(tmp_path / "other", Shape(hidden=32, heads=2, kv_heads=1, ffn=64))
    message = failing(other, "--adapter", adapter)
    assert re.search(
        r"adapter does not fit the base: model\.layers\.\d+\.\S+ is \[\d+, \d+\] in the base "
        r"but \[\d+, \d+\] in \S+plain \(was it trained on another base model\?\)$",
        message,
    )

    assert "must end in .gguf" in failing(tiny_model, "--output", tmp_path / "x.bin")
    assert "--converter llama.cpp needs [tools] convert_hf_to_gguf" in failing(tiny_model, "--converter", "llama.cpp")


def test_disk_space_is_checked_before_writing(tmp_path, tiny_model, monkeypatch, capsys, config_file):
    import shutil as shutil_module
    from collections import namedtuple

    from stages.convert_gguf import main

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 10 << 20))
    assert main(["--model", str(tiny_model), "--output", str(tmp_path / "m.gguf")]) == 1
    assert "10.5 MB free, the GGUF file needs" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".m.gguf*"))


@needs_reference
def test_llama_cpp_converter_can_be_chosen_also_with_an_adapter(tmp_path, tiny_model, adapter_root):
    adapter = make_adapter(tiny_model, adapter_root, "plain")
    config = tmp_path / "config.toml"
    config.write_text(f'[tools]\nconvert_hf_to_gguf = "{Path(LLAMA_SRC) / "convert_hf_to_gguf.py"}"\n')
    out = tmp_path / "ref.gguf"
    proc, events = stage(
        "convert_gguf",
        "--model",
        tiny_model,
        "--adapter",
        adapter,
        "--output",
        out,
        "--converter",
        "llama.cpp",
        tmp_path=tmp_path,
        env={"W4TUI_CONFIG": str(config)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = read_gguf(
        convert(tmp_path, tiny_model, tmp_path / "ours.gguf", "--adapter", adapter) and tmp_path / "ours.gguf"
    )
    theirs = read_gguf(out)
    assert all(t.data == ours.tensors[n].data for n, t in theirs.tensors.items())  # same merge, same bytes
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["converter"] == "llama.cpp" and artifact["adapter"] == str(adapter)
    assert not list(tmp_path.glob(".ref.gguf.*.partial"))  # the temporary merged copy is gone
