"""The download stage against a stand-in Hub on 127.0.0.1 (the real Hub is unreachable here)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hub_standin import COMMIT, HubStandIn

from w4tui.events import read_events

REPO = "Qwen/Qwen2.5-Coder-7B-Instruct"


def download(args, tmp_path, endpoint=None):
    env = dict(os.environ, W4TUI_EVENTS=str(tmp_path / "events.jsonl"), W4TUI_RUN_ID="t")
    env.pop("HF_HUB_OFFLINE", None)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, "-m", "stages.download", *args], capture_output=True, text=True, env=env)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(tiny_model, tmp_path):
    with HubStandIn(REPO, tiny_model) as server:
        yield server


def test_downloads_only_model_files_with_byte_progress(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    proc = download(["--repo", REPO, "--revision", "main", "--output", str(out)], tmp_path, hub.url)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(hub.files)  # README.md is not a model file and is not fetched
    for name in names:
        assert digest(out / name) == digest(tiny_model / name)
    events = read_events(tmp_path / "events.jsonl")
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == sum(len(d) for d in hub.files.values())
    assert progress[-1]["unit"] == "bytes"
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "model" and artifact["commit"] == COMMIT and artifact["path"] == str(out)
    assert not (out / ".download").exists()


def test_interrupted_download_resumes_with_range(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    shard = "model-00002-of-00002.safetensors"
    hub.cut_after[shard] = 1_000_000
    first = download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url)
    assert first.returncode == 1
    assert first.stderr.strip().splitlines()[-1].startswith(f"error: {shard}: ")
    assert "run again to resume" in first.stderr and "Traceback" not in first.stderr
    assert not (out / shard).exists()  # never a half file under the real name
    assert (out / ".download" / f"{shard}.part").stat().st_size == 1_000_000
    second = download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url)
    assert second.returncode == 0, second.stderr
    assert (shard, "bytes=1000000-") in hub.ranges
    assert digest(out / shard) == digest(tiny_model / shard)
    # a third run finds everything in place and fetches nothing
    before = len(hub.ranges)
    assert download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url).returncode == 0
    assert len(hub.ranges) == before


def test_unknown_repo_is_one_clear_line(hub, tmp_path):
    proc = download(["--repo", "Qwen/Nope", "--output", str(tmp_path / "m")], tmp_path, hub.url)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: Qwen/Nope: no such model on the Hub (or it is private: set HF_TOKEN)"


def test_unreachable_hub_says_what_to_do(tmp_path):
    proc = download(["--repo", REPO, "--output", str(tmp_path / "m")], tmp_path, "http://127.0.0.1:9")
    assert proc.returncode == 1 and "cannot reach the Hub" in proc.stderr and "Traceback" not in proc.stderr


def test_local_directory_is_copied(tiny_model, tmp_path):
    out = tmp_path / "copy"
    proc = download(["--repo", str(tiny_model), "--output", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert digest(out / "model-00001-of-00002.safetensors") == digest(tiny_model / "model-00001-of-00002.safetensors")
    assert json.loads((out / ".w4tui-download.json").read_text())["repo"] == str(tiny_model)


def test_local_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = download(["--repo", str(tmp_path / "empty"), "--output", str(tmp_path / "m")], tmp_path)
    assert proc.returncode == 1 and "no config.json" in proc.stderr


def test_not_enough_disk_space_is_refused_before_writing(tiny_model, tmp_path, monkeypatch, capsys):
    import shutil

    from stages import download as stage

    monkeypatch.setenv("W4TUI_EVENTS", str(tmp_path / "events.jsonl"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000))
    out = tmp_path / "m"
    assert stage.main(["--repo", str(tiny_model), "--output", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "4.9 KiB free" in error and "choose another directory" in error
    assert not any(p.suffix == ".safetensors" for p in out.rglob("*"))
    assert read_events(tmp_path / "events.jsonl")[-1]["kind"] == "error"
