"""The quantize stage: real llama.cpp quantization of GGUFs the convert stage wrote, the backend order,
deferring to Ollama, and one-line errors that leave no file behind."""

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["ollama_fixtures"]
from core.gguf_header import read_info
from stages import quantize
from stages.evaluation.llama_run import open_llama  # llama.cpp without its AMX path (#20824)

PROMPT = [151644, 872, 198, 4021, 264, 393, 5626, 32, 369, 3692, 9688, 151645, 198, 151644, 77091, 198]
needs_llama_cpp = pytest.mark.skipif(
    not quantize.has_binding(), reason="llama-cpp-python not installed (pip install -e '.[llama]')"
)


def logits(path: Path) -> np.ndarray:
    model = open_llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False)
    model.eval(PROMPT)
    return np.array(model.scores[: len(PROMPT)])


@needs_llama_cpp
def test_q4_k_m_is_real_k_quants_that_llama_cpp_loads_and_runs(tmp_path, config_file, run_stage, k_quant_f16_gguf):
    out = tmp_path / "m-Q4_K_M.gguf"
    result = run_stage("quantize", "--input", k_quant_f16_gguf, "--output", out, "--type", "Q4_K_M")
    assert result.rc == 0, result.stderr
    info = read_info(out)
    assert info.file_type == "Q4_K_M"
    types = {name: t for name, _, t in info.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["token_embd.weight"] == "Q6_K"
    assert {types["blk.0.attn_v.weight"], types["blk.0.ffn_down.weight"]} == {"Q6_K"}  # Q4_K_M's mix
    assert k_quant_f16_gguf.stat().st_size / out.stat().st_size > 2.1  # 6.5 bits a weight, the tokenizer as is
    assert result.artifact == {
        **result.artifact,
        "type": "gguf",
        "path": str(out),
        "quant": "Q4_K_M",
        "parent": str(k_quant_f16_gguf),
        "backend": "llama_cpp",
        "fallback_tensors": 0,
    }
    progress = result.of("progress")
    assert progress[-1]["done"] == progress[-1]["total"] == 14 and progress[-1]["unit"] == "tensors"
    assert not list(tmp_path.glob(".m-Q4_K_M*"))  # no temporary left
    # llama.cpp runs it, and it still computes what the F16 model computes
    ours, reference = logits(out), logits(k_quant_f16_gguf)
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.98
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.8
    completion = open_llama(model_path=str(out), n_ctx=64, verbose=False).create_completion(
        "Create a PDCA", max_tokens=6, temperature=0
    )
    assert completion["usage"]["completion_tokens"] == 6 and completion["choices"][0]["text"]


@needs_llama_cpp
@pytest.mark.parametrize("qtype", ["Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0"])
def test_the_other_types(tmp_path, config_file, run_stage, tiny_f16_gguf, qtype):
    out = tmp_path / f"tiny-{qtype}.gguf"
    result = run_stage("quantize", "--input", tiny_f16_gguf, "--output", out, "--type", qtype, "--threads", "1")
    assert result.rc == 0, result.stderr
    assert read_info(out, tensors=False).file_type == qtype
    # rows of 64 values: K-quants fall back per tensor, which the artifact reports
    assert (result.artifact["fallback_tensors"] > 0) == (qtype != "Q8_0")


def real_llama_quantize() -> str | None:
    return os.environ.get("W4TUI_LLAMA_QUANTIZE") or shutil.which("llama-quantize")


@needs_llama_cpp
@pytest.mark.skipif(not real_llama_quantize(), reason="no llama-quantize program (on PATH or $W4TUI_LLAMA_QUANTIZE)")
def test_the_llama_quantize_program_gives_the_same_file_as_the_binding(tmp_path, config_file, run_stage, tiny_f16_gguf):
    config_file.write_text(f'[tools]\nllama_quantize = "{real_llama_quantize()}"\n')
    by_program = run_stage("quantize", "--input", tiny_f16_gguf, "--output", tmp_path / "a.gguf")
    assert by_program.rc == 0 and by_program.artifact["backend"] == "llama-quantize"
    assert by_program.of("progress")[-1]["done"] == len(read_info(tiny_f16_gguf).tensors)
    by_binding = run_stage(
        "quantize", "--input", tiny_f16_gguf, "--output", tmp_path / "b.gguf", "--backend", "llama_cpp"
    )
    assert by_binding.rc == 0
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def legacy_imatrix(gguf: Path, out: Path) -> Path:
    """An importance matrix in llama-imatrix's legacy .dat layout, one entry per layer weight."""
    import struct

    rng = np.random.default_rng(0)
    entries = [
        (name, shape[-1]) for name, shape, _ in read_info(gguf).tensors if name.startswith("blk.") and len(shape) == 2
    ]
    data = struct.pack("<i", len(entries))
    for name, ncols in entries:
        data += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 1, ncols)
        data += rng.uniform(0.1, 10, ncols).astype("<f4").tobytes()
    out.write_bytes(data)
    return out


@pytest.mark.skipif(not real_llama_quantize(), reason="no llama-quantize program (on PATH or $W4TUI_LLAMA_QUANTIZE)")
def test_an_importance_matrix_reaches_llama_quantize(tmp_path, config_file, run_stage, k_quant_f16_gguf):
    config_file.write_text(f'[tools]\nllama_quantize = "{real_llama_quantize()}"\n')
    imatrix = legacy_imatrix(k_quant_f16_gguf, tmp_path / "imatrix.dat")
    plain = run_stage("quantize", "--input", k_quant_f16_gguf, "--output", tmp_path / "plain.gguf")
    weighted = run_stage(
        "quantize", "--input", k_quant_f16_gguf, "--output", tmp_path / "weighted.gguf", "--imatrix", imatrix
    )
    assert plain.rc == weighted.rc == 0, weighted.stderr
    assert weighted.artifact["imatrix"] == str(imatrix) and "imatrix" not in plain.artifact
    assert read_info(tmp_path / "weighted.gguf").file_type == "Q4_K_M"
    assert (tmp_path / "plain.gguf").read_bytes() != (tmp_path / "weighted.gguf").read_bytes()


@needs_llama_cpp
def test_sigterm_stops_the_quantizer_and_leaves_nothing(tmp_path, config_file, k_quant_f16_gguf):
    import signal
    import subprocess
    import sys
    import time

    from core.events import read_events

    events, out = tmp_path / "events.jsonl", tmp_path / "q.gguf"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.quantize", "--input", str(k_quant_f16_gguf), "--output", str(out)],
        env={**os.environ, "W4TUI_EVENTS": str(events)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(e.get("done", 0) >= 1 for e in read_events(events) if e["kind"] == "progress"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # while llama.cpp works on the 152k-row embedding
    assert proc.wait(30) == 130 and proc.stderr.read().strip() == "quantize: cancelled"
    assert read_events(events)[-1]["status"] == "cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "events.jsonl"]  # no output, no temp


def executable(path: Path, text: str) -> Path:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_backend_order(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(quantize, "has_binding", lambda: True)
    assert quantize.find_backend("").name == "llama_cpp"
    # an unrelated program named `quantize` is not llama.cpp's
    executable(bin_dir / "quantize", "echo 'usage: quantize FILE'\n")
    assert quantize.find_backend("").name == "llama_cpp"
    executable(bin_dir / "quantize", "echo 'usage: quantize [--help] [--allow-requantize] ...'\n")
    assert quantize.find_backend("").command == [str(bin_dir / "quantize")]
    executable(bin_dir / "llama-quantize", "exit 0\n")
    assert quantize.find_backend("").command == [str(bin_dir / "llama-quantize")]
    mine = executable(tmp_path / "my-quantize", "exit 0\n")
    assert quantize.find_backend(str(mine)).command == [str(mine)]
    monkeypatch.setattr(quantize, "has_binding", lambda: False)
    (bin_dir / "quantize").unlink()
    (bin_dir / "llama-quantize").unlink()
    assert quantize.find_backend("") is None


def test_without_a_quantizer_it_says_how_or_defers_to_ollama(
    tmp_path, config_file, run_stage, tiny_f16_gguf, monkeypatch
):
    monkeypatch.setattr(quantize, "find_program", lambda configured: None)
    monkeypatch.setattr(quantize, "has_binding", lambda: False)
    out = tmp_path / "q.gguf"
    deferred = run_stage("quantize", "--input", tiny_f16_gguf, "--output", out)
    assert deferred.rc == 0 and not out.exists()
    assert deferred.artifact["path"] == str(tiny_f16_gguf) and deferred.artifact["defer_quantize"] == "Q4_K_M"
    assert deferred.artifact["quant"] == "F16"
    assert "Ollama will quantize to Q4_K_M at deploy" in deferred.of("log")[-1]["message"]
    q6 = run_stage("quantize", "--input", tiny_f16_gguf, "--output", out, "--type", "Q6_K")
    assert q6.rc == 1 and "Ollama cannot make Q6_K itself" in q6.stderr
    (tmp_path / "m.dat").write_bytes(b"\0" * 16)
    weighted = run_stage("quantize", "--input", tiny_f16_gguf, "--output", out, "--imatrix", tmp_path / "m.dat")
    assert weighted.rc == 1 and "Ollama cannot use an importance matrix" in weighted.stderr
    config_file.write_text("[quantize]\nollama_fallback = false\n")
    refused = run_stage("quantize", "--input", tiny_f16_gguf, "--output", out)
    assert refused.rc == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("error: no llama.cpp quantizer found: install llama.cpp (`brew install llama.cpp`")


def test_user_errors_are_one_line_and_leave_no_file(tmp_path, config_file, run_stage, tiny_f16_gguf, tiny_q8_gguf):
    out = tmp_path / "q.gguf"

    def error(*args, config: str = "") -> str:
        config_file.write_text(config)
        result = run_stage("quantize", *args)
        assert result.rc == 1 and "Traceback" not in result.stderr and not out.exists(), result.stderr
        assert result.of("error") and len(result.stderr.strip().splitlines()) == 1
        assert not list(tmp_path.glob(".q.gguf*"))
        return result.stderr.strip()

    assert "none.gguf: no such file (run the convert stage first)" in error(
        "--input", tmp_path / "none.gguf", "--output", out
    )
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all" * 10)
    assert "bad.gguf: not a GGUF file" in error("--input", tmp_path / "bad.gguf", "--output", out)
    (tmp_path / "cut.gguf").write_bytes(tiny_f16_gguf.read_bytes()[:5000])
    assert "cut.gguf: truncated or corrupt GGUF header" in error("--input", tmp_path / "cut.gguf", "--output", out)
    assert "already quantized (Q8_0)" in error("--input", tiny_q8_gguf, "--output", out)
    assert "must end in .gguf" in error("--input", tiny_f16_gguf, "--output", tmp_path / "q.bin")
    assert "[tools] llama_quantize points at /nowhere/llama-quantize, which is not an executable file" in error(
        "--input", tiny_f16_gguf, "--output", out, config='[tools]\nllama_quantize = "/nowhere/llama-quantize"\n'
    )
    assert "missing.dat: importance matrix not found" in error(
        "--input", tiny_f16_gguf, "--output", out, "--imatrix", tmp_path / "missing.dat"
    )
    if quantize.has_binding() and not quantize.find_program(""):
        (tmp_path / "m.dat").write_bytes(b"\0" * 16)
        assert "an importance matrix needs the llama-quantize program" in error(
            "--input", tiny_f16_gguf, "--output", out, "--imatrix", tmp_path / "m.dat"
        )
