"""The eval stage on the hidden-256 test model with a trained adapter: the table's numbers agree with
transformers, with training's own eval loss and with numpy on llama.cpp's logits; quantizations rank
as they must; scratch files are gone after success, failure and Ctrl-C; mistakes are one line."""

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.events import read_events
from stages import quantize
from stages.evaluation.llama_run import open_llama  # llama.cpp without its AMX path (#20824)
from w4tui.demo.samples import write_dataset
from w4tui.demo.tinymodel import Shape, build_model

pytest_plugins = ["ollama_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not quantize.has_binding(), reason="llama-cpp-python not installed")]
TYPES = ["Q8_0", "Q4_K_M", "Q3_K_M"]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict:
    """The hidden-256 model, an adapter trained on demo data (10 % held out), its F16 GGUF."""
    root = tmp_path_factory.mktemp("eval-build")
    model = build_model(root / "m256", Shape(hidden=256, layers=1, ffn=512, heads=4, kv_heads=2, tied=True), shards=1)
    data = write_dataset(root / "train.jsonl", 40, seed=5)
    (root / "config.toml").write_text("")
    adapter = root / "adapter"
    env = dict(os.environ, W4TUI_CONFIG=str(root / "config.toml"))
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.train_lora",
            "--base_model",
            str(model),
            "--dataset",
            str(data),
            "--output",
            str(adapter),
            "--max_seq_length",
            "128",
            "--batch_size",
            "4",
            "--gradient_accumulation",
            "1",
            "--epochs",
            "1",
            "--learning_rate",
            "1e-2",
            "--eval_fraction",
            "0.1",
            "--no-gradient_checkpointing",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 0, train.stderr
    from stages.convert_gguf import main as convert

    f16 = root / "build-f16.gguf"
    with contextlib.redirect_stderr(io.StringIO()):
        assert convert(["--model", str(model), "--adapter", str(adapter), "--output", str(f16)]) == 0
    return {"root": root, "model": model, "adapter": adapter, "f16": f16, "data": data}


def scratch_left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".w4tui-eval-") or p.suffix == ".partial")


def test_the_table_on_the_test_model(build, config_file, run_stage):
    result = run_stage("evaluate", "--gguf", build["f16"], "--types", *TYPES, "--device", "cpu")
    assert result.rc == 0, result.stderr
    report = build["root"] / "build-eval.json"
    doc = json.loads(report.read_text())
    rows = {row["name"]: row for row in doc["rows"]}
    assert list(rows) == ["transformers", "F16", *TYPES]
    record = json.loads((build["adapter"] / "training_run.json").read_text())
    # the training run's own held-out samples, every one of them, the same tokens and labels:
    assert doc["data"]["samples"] == record["eval_samples"] == 4
    assert math.log(rows["transformers"]["ppl"]) == pytest.approx(record["eval_loss"], rel=1e-4)
    # conversion costs (almost) nothing; the reference against itself is exact
    assert rows["F16"]["ppl"] == pytest.approx(rows["transformers"]["ppl"], rel=1e-3)
    assert rows["F16"]["kl_mean"] == rows["F16"]["kl_p99"] == 0.0 and rows["F16"]["top1"] == 1.0
    kl = [rows[t]["kl_mean"] for t in TYPES]
    assert 0 < kl[0] < kl[1] < kl[2], kl
    sizes = [rows[t]["bytes"] for t in ["F16", *TYPES]]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert all(rows[t]["prompt_tps"] > 0 and rows[t]["gen_tps"] > 0 for t in ["F16", *TYPES])
    assert all(rows[t]["file"] is None and rows[t]["quantize_s"] > 0 for t in TYPES)  # temporary files
    assert scratch_left(build["root"]) == []
    assert sorted(p.name for p in build["root"].glob("*.gguf")) == ["build-f16.gguf"]
    artifact = result.artifact
    assert artifact["type"] == "eval" and artifact["path"] == str(report) and artifact["parent"] == str(build["f16"])
    assert artifact["Q4_K_M_kl_mean"] == rows["Q4_K_M"]["kl_mean"]
    progress = result.of("progress")
    assert progress[-1]["done"] == progress[-1]["total"] == 4 * 5 and progress[-1]["unit"] == "samples"
    logged = "\n".join(e["message"] for e in result.of("log"))
    assert "Q3_K_M" in logged and "KL mean" in logged  # the table, in the run's log too

    # the F16 row equals a straightforward numpy computation on llama.cpp's logits of the same tokens
    from transformers import AutoTokenizer

    from stages.evaluation.samples import train_eval_split

    held = train_eval_split(build["adapter"], AutoTokenizer.from_pretrained(build["model"]), print).samples
    llm = open_llama(model_path=str(build["f16"]), logits_all=True, n_ctx=256, verbose=False)
    nlls = []
    for sample in held:
        llm.reset()
        llm.eval([int(t) for t in sample.ids])
        logits = np.array(llm.scores[: len(sample.ids)], dtype=np.float64)
        for t in range(1, len(sample.ids)):
            if sample.labels[t] != -100:
                row = logits[t - 1]
                nlls.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[sample.labels[t]])
    assert rows["F16"]["tokens"] == len(nlls) == doc["data"]["scored_tokens"]
    assert rows["F16"]["ppl"] == pytest.approx(math.exp(np.mean(nlls)), rel=1e-6)


def test_the_build_s_own_quantized_file_is_scored_not_redone(build, config_file, run_stage, tmp_path):
    own = build["root"] / "build-Q8_0.gguf"
    made = run_stage("quantize", "--input", build["f16"], "--output", own, "--type", "Q8_0")
    assert made.rc == 0, made.stderr
    try:
        result = run_stage(
            "evaluate",
            "--gguf",
            own,
            "--types",
            "Q8_0",
            "--no-transformers",
            "--max_tokens",
            "40",
            "--output",
            tmp_path / "e.json",
        )
        assert result.rc == 0, result.stderr
        doc = json.loads((tmp_path / "e.json").read_text())
        rows = doc["rows"]
        assert [r["name"] for r in rows] == ["F16", "Q8_0"]  # the F16 beside the quantized input is the reference
        assert rows[1]["file"] == str(own) and rows[1]["quantize_s"] == 0 and rows[1]["bytes"] == own.stat().st_size
        # --max_tokens 40 keeps whole samples, at least one: the first held-out sample has more than 40
        assert doc["data"]["samples"] == 1 and doc["data"]["left_out_samples"] == 3
        assert rows[0]["tokens"] == doc["data"]["scored_tokens"] > 40
    finally:
        own.unlink()


def test_a_one_pass_build_gets_a_scratch_f16_and_says_so(build, config_file, run_stage, tmp_path):
    own = tmp_path / "build-Q4_K_M.gguf"  # the night's one pass: no F16 GGUF beside it
    args = ["--model", build["model"], "--adapter", build["adapter"], "--output", own, "--outtype", "Q4_K_M"]
    assert run_stage("convert_gguf", *args).rc == 0
    result = run_stage("evaluate", "--gguf", own, "--types", "Q4_K_M", "--no-transformers", "--max_tokens", "40")
    assert result.rc == 0, result.stderr
    said = [e["message"] for e in result.of("log")]
    assert any("no F16 GGUF beside it (made in one pass)" in m and "scratch F16 file" in m for m in said), said
    doc = json.loads((tmp_path / "build-eval.json").read_text())
    rows = doc["rows"]
    assert doc["f16_scratch"] is True and [r["name"] for r in rows] == ["F16", "Q4_K_M"]
    assert rows[0]["bytes"] == build["f16"].stat().st_size  # the F16 the night would have kept
    assert rows[1]["file"] == str(own) and rows[1]["quantize_s"] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".gguf", ".json")) == [
        "build-Q4_K_M.gguf",
        "build-eval.json",
    ]
    assert not scratch_left(tmp_path)


def test_a_failing_quantization_leaves_nothing_behind(build, config_file, run_stage, monkeypatch, tmp_path):
    from stages import evaluate

    broken = tmp_path / "broken-quantize"
    broken.write_text("#!/bin/sh\necho 'error: out of disk' >&2\nhead -c 1000 /dev/zero > \"$2\"\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(evaluate, "_quantizer", lambda: [str(broken)])
    result = run_stage(
        "evaluate", "--gguf", build["f16"], "--types", "Q4_K_M", "--no-transformers", "--output", tmp_path / "e.json"
    )
    assert result.rc == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: quantizing to Q4_K_M failed (exit 1, wrote None): error: out of disk "
        "(its output is in the run's output.log)"
    ]
    assert scratch_left(build["root"]) == [] and not (tmp_path / "e.json").exists()


def test_ctrl_c_leaves_nothing_behind(build, tmp_path):
    (tmp_path / "config.toml").write_text("")
    events = tmp_path / "events.jsonl"
    env = dict(os.environ, W4TUI_EVENTS=str(events), W4TUI_CONFIG=str(tmp_path / "config.toml"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stages.evaluate",
            "--gguf",
            str(build["f16"]),
            "--types",
            *TYPES,
            "--no-transformers",
            "--output",
            str(tmp_path / "e.json"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any("quantizing" in e.get("message", "") for e in read_events(events)):  # mid-way: a temp file
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    assert scratch_left(build["root"])  # the scratch directory is there while it works
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130 and proc.stderr.read().strip() == "eval: cancelled"
    assert read_events(events)[-1]["status"] == "cancelled"
    assert scratch_left(build["root"]) == [] and not (tmp_path / "e.json").exists()


def test_mistakes_are_one_line(build, config_file, run_stage, tmp_path):
    def error(*args) -> str:
        result = run_stage("evaluate", *args)
        assert result.rc in (1, 2) and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        return result.stderr.strip()

    assert "nothing.gguf: no such file" in error("--gguf", tmp_path / "nothing.gguf")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf" * 10)
    assert "not a GGUF file" in error("--gguf", tmp_path / "x.gguf")
    base_only = tmp_path / "base-f16.gguf"
    from stages.convert_gguf import main as convert

    with contextlib.redirect_stderr(io.StringIO()):
        assert convert(["--model", str(build["model"]), "--output", str(base_only)]) == 0
    assert "this build has no adapter, so there is no training eval split" in error("--gguf", base_only)
    assert "--types: invalid choice: 'Q9'" in error("--gguf", build["f16"], "--types", "Q9")
