"""convert --outtype Q4_K_M under faults: kill -9 mid-pass (the rerun reclaims the temporary and writes
llama-quantize's bytes), Ctrl-C and a disk that fills: one line, nothing left behind."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, assert_one_line, leftovers, listing, process

from core.events import read_events
from stages import quantize

pytestmark = pytest.mark.skipif(not quantize.has_binding(), reason="llama-cpp-python not installed")


def llama_quantize(f16, out, qtype: str = "Q4_K_M") -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    assert llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params)) == 0


def test_one_pass_killed_mid_write_then_rerun(workspace, tiny_model, tiny_gguf, tmp_path):
    out = workspace / "outputs" / "gguf" / "t-Q4_K_M.gguf"
    args = ["--model", tiny_model, "--output", out, "--outtype", "Q4_K_M"]
    killed = process("stages.convert_gguf", *args, kill_at="progress:2", events=workspace / "killed.jsonl")
    assert killed.rc == -9, killed.stderr
    left = leftovers(workspace)  # only the flock-ed temporary of the killed writer
    assert len(left) == 1 and left[0].startswith(f"outputs/gguf/.{out.name}.") and not out.exists(), left
    again = process("stages.convert_gguf", *args, events=workspace / "rerun.jsonl")
    assert again.rc == 0, again.stderr
    assert not leftovers(workspace), leftovers(workspace)
    llama_quantize(tiny_gguf, tmp_path / "two-step.gguf")
    assert out.read_bytes() == (tmp_path / "two-step.gguf").read_bytes()


def test_ctrl_c_mid_pass_leaves_nothing(workspace, tiny_model):
    events, out = workspace / "events.jsonl", workspace / "outputs" / "gguf" / "t-Q4_K_M.gguf"
    before = listing(workspace)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.convert_gguf", "--model", str(tiny_model), "--output", str(out)]
        + ["--outtype", "Q4_K_M"],
        env={**os.environ, "W4TUI_EVENTS": str(events)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(e.get("done", 0) > 0 for e in read_events(events) if e["kind"] == "progress"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # while the token embedding quantizes
    assert proc.wait(30) == 130 and proc.stderr.read().strip() == "convert: cancelled"  # type: ignore[union-attr]
    assert read_events(events)[-1]["status"] == "cancelled"
    after = listing(workspace)
    after.pop("events.jsonl")
    assert after == before


def test_one_pass_onto_a_full_disk(tmpfs, stage, workspace, tiny_model, monkeypatch):
    disk = tmpfs("8m")  # the tiny model's Q4_K_M is 23 MB
    args = ["--model", tiny_model, "--output", disk / "t-Q4_K_M.gguf", "--outtype", "Q4_K_M"]
    assert_one_line(stage("convert_gguf", *args), 1, str(disk), "free")  # refused before writing
    assert listing(disk) == {}
    # another program takes the space after the check: the write itself runs out
    monkeypatch.setattr("stages.convert_gguf.check_free_space", lambda *a, **k: None)
    assert_one_line(stage("convert_gguf", *args), 1, str(disk), "disk full")
    assert listing(disk) == {}


def test_what_one_pass_cannot_do_is_one_line(stage, workspace, tiny_model, monkeypatch):
    out = workspace / "outputs" / "gguf" / "t-Q4_K_M.gguf"
    args = ["--model", tiny_model, "--output", out, "--outtype", "Q4_K_M"]
    before = listing(workspace)
    assert_one_line(stage("convert_gguf", *args, "--converter", "llama.cpp"), 1, "--outtype Q4_K_M", "quantize stage")
    from stages.quant import ggml

    monkeypatch.setattr(ggml, "library_path", lambda: None)  # no llama_cpp binding
    monkeypatch.setattr(ggml, "_lib", ggml._lib.__wrapped__)  # functools.cache: forget the library found before
    assert_one_line(stage("convert_gguf", *args), 1, "llama_cpp Python binding", "--outtype f16")
    assert listing(workspace) == before
