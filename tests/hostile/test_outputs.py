"""Data loss: no stage removes or replaces what it did not make, whatever ``--output`` says.

Each case lists the whole workspace before and after: a refused output changes nothing at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import assert_one_line, listing, write_adapter

from core.errors import StageError
from stages.common.outputs import check_output


@pytest.fixture
def ws(workspace, tiny_model, tiny_gguf, monkeypatch):
    """A workspace with an adapter, a GGUF and a note of the user's own: everything a typo could destroy."""
    monkeypatch.setenv("HOME", str(workspace / "home"))
    (workspace / "home").mkdir()
    write_adapter(workspace / "outputs" / "adapters" / "a1")
    (workspace / "outputs" / "gguf").mkdir()
    os.link(tiny_gguf, workspace / "outputs" / "gguf" / "a1-f16.gguf")  # a link: cheap, and a change would show
    (workspace / "notes").mkdir()
    (workspace / "notes" / "mine.txt").write_text("not w4tui's")
    return workspace


MERGE_OUTPUTS = {  # the --output typo -> what the error line must name
    "outputs root": ("outputs", "[paths] outputs"),
    "config dir": (".", "the config's directory"),
    "home": ("home", "your home directory"),
    "the adapter (an input)": ("outputs/adapters/a1", "the input"),
    "a parent of the adapter": ("outputs/adapters", "holds the input"),
    "a directory of the user's": ("notes", "other content (mine.txt)"),
    "an existing file": ("notes/mine.txt", "is an existing file"),
}


@pytest.mark.parametrize("output, named", MERGE_OUTPUTS.values(), ids=MERGE_OUTPUTS.keys())
def test_merge_refuses_an_output_it_would_destroy(ws, stage, tiny_model, output, named):
    before = listing(ws)
    result = stage("merge_lora", "--adapter", "outputs/adapters/a1", "--base_model", tiny_model, "--output", output)
    assert_one_line(result, 1, f"--output {output}", named)
    assert listing(ws) == before


def test_merge_refuses_a_symlink_output_and_keeps_its_target(ws, stage, tiny_model):
    (ws / "outputs" / "merged").mkdir()
    os.symlink(ws / "outputs" / "adapters", ws / "outputs" / "merged" / "x")
    before = listing(ws)
    result = stage(
        "merge_lora", "--adapter", "outputs/adapters/a1", "--base_model", tiny_model, "--output", "outputs/merged/x"
    )
    assert_one_line(result, 1, "outputs/merged/x", "symbolic link")
    assert listing(ws) == before


CONVERT_OUTPUTS = {
    "an existing directory": ("outputs/gguf", "is an existing directory"),
    "a directory named like the file": ("outputs/gguf/old.gguf", "is an existing directory"),
    "a file w4tui did not write": ("notes/mine.gguf", "a file w4tui did not write"),
    "the outputs root": ("outputs", "[paths] outputs"),
}


@pytest.mark.parametrize("output, named", CONVERT_OUTPUTS.values(), ids=CONVERT_OUTPUTS.keys())
def test_convert_refuses_an_output_it_would_destroy(ws, stage, tiny_model, output, named):
    (ws / "notes" / "mine.gguf").write_bytes(b"GGUF but someone else's")
    (ws / "outputs" / "gguf" / "old.gguf").mkdir()
    (ws / "outputs" / "gguf" / "old.gguf" / "keep.txt").write_text("a directory, not a GGUF")
    before = listing(ws)
    result = stage("convert_gguf", "--model", tiny_model, "--adapter", "outputs/adapters/a1", "--output", output)
    assert_one_line(result, 1, f"--output {output}", named)
    assert listing(ws) == before


def test_convert_replaces_its_own_earlier_gguf(ws, stage, tiny_model, tiny_gguf):
    result = stage("convert_gguf", "--model", tiny_model, "--output", "outputs/gguf/a1-f16.gguf")
    assert result.rc == 0, result.stderr
    assert (ws / "outputs" / "gguf" / "a1-f16.gguf").read_bytes() == tiny_gguf.read_bytes()
    assert sorted(p.name for p in (ws / "outputs" / "gguf").iterdir()) == ["a1-f16.gguf"]


def test_merge_replaces_its_own_earlier_merge(ws, stage, tiny_model):
    args = ["--adapter", "outputs/adapters/a1", "--base_model", tiny_model, "--output", "outputs/merged/a1"]
    assert stage("merge_lora", *args).rc == 0
    first = listing(ws / "outputs" / "merged" / "a1")
    result = stage("merge_lora", *args)
    assert result.rc == 0, result.stderr
    assert listing(ws / "outputs" / "merged" / "a1").keys() == first.keys()
    assert sorted(p.name for p in (ws / "outputs" / "merged").iterdir()) == ["a1"]


@pytest.mark.parametrize(
    "output, named",
    [
        ("outputs/gguf", "holds the input"),
        ("notes/mine.txt", "a file w4tui did not write"),
        ("outputs/gguf/a1-f16.gguf", "is the input"),
    ],
)
def test_quantize_refuses_an_output_it_would_destroy(ws, stage, output, named):
    before = listing(ws)
    result = stage("quantize", "--input", "outputs/gguf/a1-f16.gguf", "--output", output)
    assert_one_line(result, 1, output, named)
    assert listing(ws) == before


TRAIN_OUTPUTS = {
    "outputs root": ("outputs", "[paths] outputs"),
    "a directory of the user's": ("notes", "other content"),
    "the adapters folder": ("outputs/adapters", "other content (a1)"),
    "the config dir": (".", "the config's directory"),
}


@pytest.mark.parametrize("output, named", TRAIN_OUTPUTS.values(), ids=TRAIN_OUTPUTS.keys())
def test_train_refuses_an_output_before_loading_anything(ws, stage, tiny_model, output, named):
    (ws / "data.jsonl").write_text('{"text": "hello"}\n')
    before = listing(ws)
    result = stage(
        "train_lora", "--base_model", tiny_model, "--dataset", "data.jsonl", "--output", output, "--device", "cpu"
    )
    assert_one_line(result, 1, f"--output {output}", named)
    assert listing(ws) == before


@pytest.mark.parametrize("output, named", [("outputs", "[paths] outputs"), ("notes", "other content")])
def test_download_refuses_an_output_with_other_content(ws, stage, tiny_model, output, named):
    before = listing(ws)
    result = stage("download", "--repo", tiny_model, "--output", output)
    assert_one_line(result, 1, f"--output {output}", named)
    assert listing(ws) == before


@pytest.mark.parametrize("root", ["/", "home"])
def test_the_guard_refuses_the_roots_a_stage_must_never_replace(ws, root):
    path = Path("/") if root == "/" else ws / "home"
    for kind in ("dir", "file"):
        with pytest.raises(StageError, match="the file system root|your home directory"):
            check_output(path, kind, own=lambda p: True)


@pytest.mark.parametrize("module", ["train_lora", "convert_gguf", "merge_lora"])
def test_an_output_under_a_file_is_refused_before_any_work(ws, stage, tiny_model, module):
    (ws / "data.jsonl").write_text('{"text": "hello"}\n')
    args = {
        "train_lora": ["--base_model", tiny_model, "--dataset", "data.jsonl", "--output", "notes/mine.txt/a"],
        "convert_gguf": ["--model", tiny_model, "--output", "notes/mine.txt/a.gguf"],
        "merge_lora": ["--adapter", "outputs/adapters/a1", "--base_model", tiny_model, "--output", "notes/mine.txt/m"],
    }[module]
    before = listing(ws)
    result = stage(module, *args)
    assert_one_line(result, 1, f"{ws / 'notes' / 'mine.txt'} is a file, not a directory")
    assert listing(ws) == before
