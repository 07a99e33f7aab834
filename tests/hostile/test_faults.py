"""Faults: kill -9 in the middle of every stage that writes (then the rerun or resume finishes and
reclaims what the killed one left), and disks that fill up while writing."""

from __future__ import annotations

import filecmp
import json

import pytest
from conftest import assert_one_line, leftovers, listing, process, write_adapter

from w4tui.demo.samples import write_dataset


def killed_then_rerun(
    module: str, args: list, root, kill_at: str = "progress:1", rerun: list | None = None, partial: bool = True
):
    """Kill the stage at ``kill_at`` (mid-write: it leaves its partial output), run it again; the second
    outcome, once nothing temporary is left."""
    killed = process(module, *args, kill_at=kill_at, events=root / "killed.jsonl")
    assert killed.rc == -9, killed.stderr
    left = leftovers(root)
    assert bool(left) == partial, f"left by the kill: {left}"
    again = process(module, *(rerun or args), events=root / "rerun.jsonl")
    assert again.rc == 0, again.stderr
    assert not leftovers(root), f"left behind after the rerun: {leftovers(root)} (before: {left})"
    return again


def test_convert_killed_mid_write_then_rerun(workspace, tiny_model, tiny_gguf):
    out = workspace / "outputs" / "gguf" / "t-f16.gguf"
    killed_then_rerun("stages.convert_gguf", ["--model", tiny_model, "--output", out], workspace)
    assert filecmp.cmp(out, tiny_gguf, shallow=False)


def test_merge_killed_mid_write_then_rerun(workspace, tiny_model):
    adapter = write_adapter(workspace / "outputs" / "adapters" / "a1")
    out = workspace / "outputs" / "merged" / "a1"
    killed_then_rerun(
        "stages.merge_lora", ["--adapter", adapter, "--base_model", tiny_model, "--output", out], workspace
    )
    assert json.loads((out / "w4tui_merge.json").read_text())["lora_modules"] == 2
    assert (workspace / "outputs" / "adapters" / "a1" / "adapter_config.json").is_file()


def test_quantize_killed_mid_write_then_rerun(workspace, tiny_gguf):
    from stages.quantize import has_binding

    if not has_binding():
        pytest.skip("no llama_cpp binding: nothing to quantize with")
    out = workspace / "outputs" / "gguf" / "t-Q8_0.gguf"
    killed_then_rerun(
        "stages.quantize", ["--input", tiny_gguf, "--output", out, "--type", "Q8_0"], workspace, kill_at="progress:3"
    )
    from core.gguf_header import read_info

    assert read_info(out).file_type == "Q8_0"


def test_download_killed_mid_file_then_rerun(workspace, tiny_model):
    out = workspace / "models" / "base"
    killed_then_rerun("stages.download", ["--repo", tiny_model, "--output", out], workspace)
    for f in tiny_model.iterdir():
        assert filecmp.cmp(f, out / f.name, shallow=False), f.name


@pytest.mark.slow
def test_train_killed_after_a_checkpoint_then_resumed(workspace, tiny_model):
    data = write_dataset(workspace / "d.jsonl", 16, seed=1)
    out = workspace / "outputs" / "adapters" / "t"
    args = [
        "--base_model",
        tiny_model,
        "--dataset",
        data,
        "--output",
        out,
        "--max_seq_length",
        "64",
        "--batch_size",
        "4",
        "--gradient_accumulation",
        "1",
        "--epochs",
        "1",
        "--checkpoint_every",
        "2",
        "--no-gradient_checkpointing",
        "--device",
        "cpu",
        "--eval_fraction",
        "0",
        "--no-cache",
    ]
    # killed right after a checkpoint completed: nothing partial, and the resume starts from it
    again = killed_then_rerun(
        "stages.train_lora", args, workspace, kill_at="artifact:checkpoint", rerun=[*args, "--resume"], partial=False
    )
    assert any(e.get("kind") == "log" and "resuming from step-" in e.get("message", "") for e in again.events)
    assert (out / "adapter_model.safetensors").is_file() and (out / "training_run.json").is_file()


# -- full disks: a 24 MiB tmpfs, smaller than any of these outputs --------------------------------------


def test_convert_onto_a_full_disk_is_refused_before_writing(tmpfs, stage, workspace, tiny_model):
    disk = tmpfs("24m")
    result = stage("convert_gguf", "--model", tiny_model, "--output", disk / "t-f16.gguf")
    assert_one_line(result, 1, str(disk), "free")
    assert listing(disk) == {}


@pytest.mark.parametrize("module", ["convert_gguf", "merge_lora"])
def test_a_disk_that_fills_while_writing_is_named_and_cleaned(tmpfs, stage, workspace, tiny_model, module, monkeypatch):
    disk = tmpfs("24m")
    # Another program takes the space after the free-space check: the write itself runs out.
    monkeypatch.setattr(f"stages.{module}.check_free_space", lambda *a, **k: None)
    adapter = write_adapter(workspace / "outputs" / "adapters" / "a1")
    args = (
        ["--model", tiny_model, "--output", disk / "t-f16.gguf"]
        if module == "convert_gguf"
        else ["--adapter", adapter, "--base_model", tiny_model, "--output", disk / "merged"]
    )
    before = listing(workspace)
    result = stage(module, *args)
    assert_one_line(result, 1, str(disk), "disk full")
    assert listing(disk) == {} and listing(workspace) == before


def test_quantize_onto_a_disk_that_fills_names_the_cause(tmpfs, stage, workspace, tiny_gguf, monkeypatch):
    from stages.quantize import has_binding

    if not has_binding():
        pytest.skip("no llama_cpp binding: nothing to quantize with")
    disk = tmpfs("4m")
    monkeypatch.setattr("stages.quantize.check_free_space", lambda *a, **k: None)
    result = stage("quantize", "--input", tiny_gguf, "--output", disk / "t-Q8_0.gguf", "--type", "Q8_0")
    assert_one_line(result, 1, str(disk), "disk full")
    assert listing(disk) == {}


def test_download_onto_a_disk_that_fills_names_the_cause(tmpfs, stage, workspace, tiny_model, monkeypatch):
    disk = tmpfs("24m")
    monkeypatch.setattr("stages.download.check_free_space", lambda *a, **k: None)
    result = stage("download", "--repo", tiny_model, "--output", disk / "base")
    assert_one_line(result, 1, "disk full")


def test_train_into_a_read_only_directory_is_refused_before_training(tmpfs, stage, workspace, tiny_model):
    disk = tmpfs("1m", "ro")
    (workspace / "d.jsonl").write_text('{"text": "hi"}\n')
    result = stage(
        "train_lora", "--base_model", tiny_model, "--dataset", "d.jsonl", "--output", disk / "a", "--device", "cpu"
    )
    assert_one_line(result, 1, str(disk), "read-only file system")
