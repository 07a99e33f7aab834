"""The streaming merge against PEFT's merge_and_unload(), bit for bit, on real PEFT adapters."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from peft_adapters import load_shards, make_adapter, peft_merged, stage, write_json

from w4tui.demo.tinymodel import SHAPES, build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "peft-adapters"


@pytest.mark.parametrize("kind", ["plain", "full", "bf16"])
def test_streaming_merge_equals_peft_merge_and_unload(tmp_path, tiny_model, adapter_root, kind):
    adapter = make_adapter(tiny_model, adapter_root, kind)
    out = tmp_path / "merged"
    proc, events = stage(
        "merge_lora", "--adapter", adapter, "--base_model", tiny_model, "--output", out, tmp_path=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    expected = peft_merged(tiny_model, adapter).state_dict()
    got, before = load_shards(out), load_shards(tiny_model)
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, expected[name]), name  # bit for bit
    unchanged = {name for name in got if torch.equal(got[name], before[name])}
    if kind == "full":  # embeddings, lm_head, the final norm, biases, projections: all but the layer norms
        assert unchanged == {
            f"model.layers.{i}.{n}.weight" for i in (0, 1) for n in ("input_layernorm", "post_attention_layernorm")
        }
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "generation_config.json",
        "config.json",
        "model.safetensors.index.json",
    ):
        assert (out / name).read_bytes() == (tiny_model / name).read_bytes()
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "merged" and artifact["parent"] == str(adapter) and artifact["path"] == str(out)
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == artifact["bytes"]
    assert progress[-1]["tensors_done"] == progress[-1]["tensors_total"] == 27
    assert not list(tmp_path.glob(".merged*"))  # no temporary left behind


def test_merge_equals_peft_at_the_real_qwen2_5_0_5b_widths(tmp_path, adapter_root):
    """The widths decide the BLAS kernel: at the tiny model's every kernel agrees, at 0.5B's (896, 4864)
    a numpy matmul differed from PEFT's torch one in 41 of 290 tensors on some CPUs. Two layers keep it
    small; r=16/alpha=32 on every projection is the product's night."""
    shape = dataclasses.replace(SHAPES["0.5b"], layers=2)
    base = build_model(tmp_path / "qwen-0.5b-widths", shape, seed=1, shards=1)
    adapter = make_adapter(base, adapter_root, "night")
    out = tmp_path / "merged"
    proc, _ = stage("merge_lora", "--adapter", adapter, "--base_model", base, "--output", out, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected, got = peft_merged(base, adapter).state_dict(), load_shards(out)
    assert torch.equal(expected.pop("lm_head.weight"), got["model.embed_tokens.weight"])  # tied, as 0.5B's
    assert got.keys() == expected.keys()
    differ = [name for name, tensor in got.items() if not torch.equal(tensor, expected[name])]
    assert differ == []  # bit for bit, every tensor


def test_merge_to_f16_equals_peft_merge_then_cast(tmp_path, tiny_model, adapter_root):
    adapter = make_adapter(tiny_model, adapter_root, "plain")
    out = tmp_path / "merged-f16"
    proc, _ = stage(
        "merge_lora",
        "--adapter",
        adapter,
        "--base_model",
        tiny_model,
        "--output",
        out,
        "--dtype",
        "f16",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    expected = {k: v.to(torch.float16) for k, v in peft_merged(tiny_model, adapter).state_dict().items()}
    got = load_shards(out)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(v.numel() * 2 for v in got.values())


def test_fan_in_fan_out_conv1d_model_equals_peft(tmp_path, tiny_model):
    """GPT-2 keeps weights transposed (Conv1D), PEFT's fan_in_fan_out case; also an F32 base."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=512, n_positions=64)).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model / name, base / name)
    peft = get_peft_model(
        GPT2LMHeadModel.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, init_lora_weights=False),
    )
    peft.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "merged"
    proc, _ = stage(
        "merge_lora", "--adapter", tmp_path / "adapter", "--base_model", base, "--output", out, tmp_path=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    expected = peft.merge_and_unload().state_dict()
    got = load_shards(out)
    before = load_shards(base)
    for name, tensor in got.items():
        # float32 all the way: only the order of the rank-4 sums may differ from torch's
        torch.testing.assert_close(tensor, expected[name], rtol=1e-6, atol=1e-7)
    assert not torch.equal(got["transformer.h.0.attn.c_attn.weight"], before["transformer.h.0.attn.c_attn.weight"])


def test_user_errors_are_one_line_and_leave_nothing(tmp_path, tiny_model, adapter_root):
    adapter = make_adapter(tiny_model, adapter_root, "plain")

    def merge(adapter_dir, base=tiny_model, output=None):
        out = output or tmp_path / "out"
        proc, events = stage(
            "merge_lora", "--adapter", adapter_dir, "--base_model", base, "--output", out, tmp_path=tmp_path
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
        assert events[-1]["kind"] == "error"
        return proc.stderr.strip()

    from w4tui.demo.tinymodel import Shape, build_model

    other = build_model(tmp_path / "other", Shape(hidden=32, heads=2, kv_heads=1, ffn=64))
    message = merge(adapter, base=other)
    assert (
        "adapter does not fit the base: model.layers.0.mlp.down_proj.weight is [32, 64] in the base "
        f"but [64, 128] in {adapter}" in message
    )

    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora)
    write_json(
        dora / "adapter_config.json", {**json.loads((adapter / "adapter_config.json").read_text()), "use_dora": True}
    )
    assert "DoRA adapters are not supported" in merge(dora)

    assert "not a PEFT adapter (no adapter_config.json)" in merge(tiny_model)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copyfile(adapter / "adapter_config.json", pickled / "adapter_config.json")
    (pickled / "adapter_model.bin").write_bytes(b"\0")
    assert "adapter_model.bin (pickle) found" in merge(pickled)

    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model, no_tok)
    (no_tok / "tokenizer_config.json").unlink()
    assert "missing tokenizer files: tokenizer_config.json" in merge(adapter, base=no_tok)

    truncated = tmp_path / "truncated"
    shutil.copytree(adapter, truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert f"{weights}: truncated or corrupt" in merge(truncated)

    assert f"is the input {tiny_model}" in merge(adapter, output=tiny_model)


def test_halfprec_rounds_exactly_as_torch():
    from stages.weights.halfprec import bf16_to_f16, bf16_to_f32, f32_to_bf16

    bits = np.arange(1 << 16, dtype=np.uint16)  # every bf16 value
    expected = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(torch.float16)
    got = torch.from_numpy(bf16_to_f16(bits))
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got[~got.isnan()].view(torch.int16), expected[~expected.isnan()].view(torch.int16))

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32).view(np.float32),
            np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-45, -1e-40], np.float32),
        ]
    )
    got = torch.from_numpy(bf16_to_f32(f32_to_bf16(values)))
    expected = torch.from_numpy(values).to(torch.bfloat16).float()
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got[~got.isnan()], expected[~expected.isnan()])
