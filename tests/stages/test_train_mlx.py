"""The mlx backend end to end on the tiny Qwen2 model, on mlx's CPU build: QLoRA learns, its adapter is
PEFT's (same logits as mlx's model + adapter, merge and convert take it), kill -9 + resume is exact,
Ctrl-C checkpoints, and a night on mlx continues a torch adapter. mlx on the CPU is slow: few steps."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.events import read_events
from w4tui.demo.samples import write_dataset

pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install 'w4tui[mlx]'; on Linux 'mlx[cpu]')")

from test_train_stage import metrics, train  # noqa: E402  (the torch tests' runner, flags and readers)

pytestmark = pytest.mark.slow
MLX = ["--backend", "mlx", "--epochs", "1", "--checkpoint_every", "2"]
# Logit agreement of PEFT's model + adapter and mlx's, both float32 on the CPU (measured: ~4e-6)
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlx-data")
    return write_dataset(root / "train.jsonl", 26, seed=5), write_dataset(root / "night.jsonl", 8, seed=9)


@pytest.fixture(scope="module")
def qlora(tmp_path_factory, tiny_model, data):
    """One uninterrupted 4-bit run: 6 steps, checkpoints at 2 and 4."""
    tmp = tmp_path_factory.mktemp("mlx-run")
    proc, events = train(tmp, tiny_model, data[0], tmp / "adapter", *MLX, "--quantize_base", "4")
    assert proc.returncode == 0, proc.stderr
    return tmp / "adapter", events


def test_qlora_loss_falls_and_the_run_says_mlx_and_4_bit(qlora):
    adapter, events = qlora
    steps = metrics(events)
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert (steps[-1]["loss"] + steps[-2]["loss"]) < 0.9 * (steps[0]["loss"] + steps[1]["loss"])
    assert steps[-1]["device"] == "mlx-cpu" and steps[-1]["mem_peak"] >= steps[-1]["mem_allocated"] >= 0
    assert [e["step"] for e in events if e["kind"] == "artifact" and e["type"] == "checkpoint"] == [2, 4]
    record = json.loads((adapter / "training_run.json").read_text())
    assert (record["backend"], record["base_precision"], record["args"]["quantize_base"]) == ("mlx", "4-bit", 4)
    assert record["steps"] == 6 and record["final_loss"] == pytest.approx(steps[-1]["loss"], rel=1e-3)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 16, 32)
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_peft_and_mlx_give_the_same_logits_for_the_adapter(qlora, tiny_model):
    """The adapter as PEFT reads it on the base (bf16 weights, float32 compute) against mlx's model with
    the same adapter loaded (quantize_base 0): the transposes and alpha/r are exact."""
    import mlx.core as mx
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from stages.train.mlx_backend import model as mlx_model
    from stages.train.mlx_backend.run import lora_spec

    adapter, _ = qlora

    class Args:
        resume_from = adapter

    ours = mlx_model.load_base(tiny_model, 0, mx.float32)
    mlx_model.add_lora(ours, lora_spec(Args))
    mlx_model.set_peft_tensors(ours, load_file(str(adapter / "adapter_model.safetensors")), adapter)
    ours.eval()  # no dropout
    ids = np.array([[151644, 872, 198, 4021, 264, 393, 5626, 32, 151645, 198, 151644, 77091, 198]])
    mask = mx.array(np.tril(np.ones((1, 1, ids.shape[1], ids.shape[1]), dtype=bool)))
    got = np.array(mlx_model.project(ours, mlx_model.hidden_states(ours, mx.array(ids), mask)))
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        plain = base(torch.from_numpy(ids)).logits.numpy()
        expected = PeftModel.from_pretrained(base, adapter)(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(expected - plain).max() > 0.05  # the adapter changes the output: the check below means something
    assert np.abs(expected - got).max() < LOGIT_TOLERANCE


def test_the_qlora_adapter_merges_onto_the_bf16_base_and_converts(qlora, tiny_model, tmp_path):
    from peft_adapters import load_shards, stage

    from core.gguf_header import read_info

    adapter, _ = qlora
    merged = tmp_path / "merged"
    proc, _ = stage(
        "merge_lora", "--adapter", adapter, "--base_model", tiny_model, "--output", merged, tmp_path=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    got, before = load_shards(merged), load_shards(tiny_model)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert got[name].dtype == torch.bfloat16 and not torch.equal(got[name], before[name])
    gguf = tmp_path / "model.gguf"
    proc, _ = stage("convert_gguf", "--model", merged, "--output", gguf, "--outtype", "f16", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_info(gguf).architecture == "qwen2"


def test_kill_9_then_resume_gives_the_same_adapter_bit_for_bit(tmp_path, qlora, tiny_model, data):
    reference, _ = qlora
    output = tmp_path / "adapter"
    proc, events_path = train(tmp_path, tiny_model, data[0], output, *MLX, "--quantize_base", "4", wait=False)
    deadline = time.monotonic() + 300
    while not any(e["kind"] == "artifact" and e.get("step") == 2 for e in read_events(events_path)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (output / "adapter_model.safetensors").exists()
    resumed, events = train(tmp_path, tiny_model, data[0], output, *MLX, "--quantize_base", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(events)[0]["step"] in (3, 5)  # it continued from a checkpoint; it did not start over
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (output / name).read_bytes() == (reference / name).read_bytes(), name
    # A resume on the other backend, or another base precision, is refused before any model loads.
    other, _ = train(tmp_path, tiny_model, data[0], output, *MLX, "--quantize_base", "8", "--resume")
    assert other.returncode == 1 and "was trained with --quantize_base 4; cannot resume exactly" in other.stderr


def test_ctrl_c_saves_a_checkpoint_and_ends_cancelled(tmp_path, tiny_model, data):
    output = tmp_path / "adapter"
    proc, events_path = train(
        tmp_path,
        tiny_model,
        data[0],
        output,
        "--backend",
        "mlx",
        "--epochs",
        "3",
        "--checkpoint_every",
        "100",
        wait=False,
    )
    deadline = time.monotonic() + 300
    while not metrics(read_events(events_path)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    events = read_events(events_path)
    assert events[-1]["kind"] == "done" and events[-1]["status"] == "cancelled"
    saved = [e for e in events if e["kind"] == "artifact" and e["type"] == "checkpoint"]
    assert (
        len(saved) == 1 and (output / "checkpoints" / f"step-{saved[0]['step']:07d}" / "optimizer.safetensors").exists()
    )


def test_a_night_on_mlx_continues_a_torch_adapter(tmp_path, tiny_model, data):
    from peft_adapters import make_adapter
    from safetensors.numpy import load_file

    parent = make_adapter(tiny_model, tmp_path, "plain")  # PEFT's own, as torch on a CUDA box writes it
    output = tmp_path / "night"
    proc, events = train(
        tmp_path, tiny_model, data[1], output, "--backend", "mlx", "--resume_from", parent, "--learning_rate", "1e-6"
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((output / "training_run.json").read_text())
    assert record["parent"] == str(parent) and record["backend"] == "mlx"
    old, new = load_file(parent / "adapter_model.safetensors"), load_file(output / "adapter_model.safetensors")
    assert old.keys() == new.keys()
    parent_config = json.loads((parent / "adapter_config.json").read_text())
    config = json.loads((output / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (parent_config["r"], parent_config["lora_alpha"])
    assert sorted(config["target_modules"]) == sorted(parent_config["target_modules"])
    for key in old:  # a tiny learning rate: the parent's weights, moved a little, not a fresh adapter
        assert old[key].shape == new[key].shape
        assert np.abs(new[key] - old[key].astype(np.float32)).max() < 1e-3 * max(np.abs(old[key]).max(), 1e-3), key


def test_the_demo_chain_on_mlx_qlora_ends_served_and_verified(tmp_path):
    """download > train (mlx, 4-bit) > merge > convert > quantize > deploy > verify, as `w4tui pipeline`
    runs it, against the Ollama stand-in: nothing after training knows which trainer made the adapter."""
    import os
    import subprocess
    import sys

    from ollama_standin import OllamaStandIn

    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install -e '.[llama]')")
    demo = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "w4tui", "demo", "init", str(demo)], check=True, capture_output=True)
    config = demo / "config.toml"
    text = (
        config.read_text().replace("max_seq_length = 256", "max_seq_length = 96").replace("epochs = 1", "epochs = 0.1")
    )
    config.write_text(text.replace("[train]\n", '[train]\nbackend = "mlx"\nquantize_base = 4\n', 1))
    with OllamaStandIn() as ollama:
        ollama.add_library_model()
        env = {**os.environ, "OLLAMA_HOST": ollama.url}
        cli = [sys.executable, "-m", "w4tui", "--config", str(config)]
        proc = subprocess.run([*cli, "pipeline"], capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "pipeline succeeded: download > train > merge > convert > quantize > deploy > verify" in proc.stdout
        status = subprocess.run([*cli, "status"], capture_output=True, text=True, env=env, check=True).stdout
        runs = json.loads(subprocess.run([*cli, "status", "--json"], capture_output=True, text=True, check=True).stdout)
    train_run = next(r for r in runs["runs"] if r["stage"] == "train")
    record = json.loads((Path(train_run["artifacts"][-1]) / "training_run.json").read_text())
    assert (record["backend"], record["base_precision"]) == ("mlx", "4-bit")
    assert "mlx 4-bit" in next(line for line in status.splitlines() if line.strip().startswith("train "))
    assert ollama.models["web4-agent:latest"]["digest"]


def test_an_mlx_run_never_imports_torch_and_keeps_its_measured_eta(qlora, tiny_model, data, monkeypatch):
    """`python -m stages.train_lora --backend mlx` as the runner starts it, with Python's import log on
    (PYTHONPROFILEIMPORTTIME, which -X importtime sets): no torch, no peft. transformers is there: mlx-lm
    imports it for its tokenizers (mlx_lm/tokenizer_utils.py). Beside the 4-bit run, this one finds that
    run's rate, so it also says how far the ETA was off at the end (an mlx run with an ETA crashed there)."""
    reference, _ = qlora
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    output = reference.parent / "without-torch"
    proc, events = train(reference.parent, tiny_model, data[0], output, *MLX, "--epochs", "0.3", "--quantize_base", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"mlx_lm", "stages.train.mlx_backend.loop", "stages.train.trainer"} <= imported  # the log is the run's
    assert sorted(m for m in imported if m.split(".")[0] in ("torch", "peft")) == []
    logs = [e["message"] for e in events if e["kind"] == "log"]
    assert any(m.startswith("ETA: ") and "measured by adapter" in m for m in logs)
    assert any(m.startswith("the ETA was ") for m in logs)
    assert json.loads((output / "training_run.json").read_text())["eta"]["source"] == "measured by adapter"


def test_resuming_a_torch_checkpoint_with_mlx_is_one_line(tmp_path, qlora, tiny_model, data):
    """A checkpoint whose state.json says torch wrote it (the settings as torch records them: a step's
    micro-batches, base precision 0), resumed with mlx: refused before any model loads, not a KeyError."""
    import shutil

    reference, _ = qlora
    output = tmp_path / "adapter"
    saved = output / "checkpoints" / "step-0000004"
    shutil.copytree(reference / "checkpoints" / "step-0000004", saved)
    state = json.loads((saved / "state.json").read_text())
    state["settings"] |= {"backend": "torch", "quantize_base": 0, "micro_batches_per_step": 1}
    (saved / "state.json").write_text(json.dumps(state))
    proc, _ = train(tmp_path, tiny_model, data[0], output, *MLX, "--quantize_base", "4", "--resume")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{saved}: was trained with --backend torch, --quantize_base 0; cannot resume exactly" in proc.stderr
