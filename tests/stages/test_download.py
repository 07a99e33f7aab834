"""The download stage through huggingface_hub, against a stand-in Hub on 127.0.0.1 (the real Hub is
unreachable here), with a Hugging Face cache of the test's own (HF_HOME)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from hub_standin import COMMIT, HubStandIn

from core.events import read_events

REPO = "Qwen/Qwen2.5-Coder-7B-Instruct"
SHARD = "model-00002-of-00002.safetensors"


def download(args, tmp_path, endpoint=None, offline=False):
    env = dict(os.environ, W4TUI_EVENTS=str(tmp_path / "events.jsonl"), W4TUI_RUN_ID="t", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    (tmp_path / "events.jsonl").unlink(missing_ok=True)
    return subprocess.run([sys.executable, "-m", "stages.download", *args], capture_output=True, text=True, env=env)


def snapshot(tmp_path):
    return tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.fixture
def hub(tiny_model):
    with HubStandIn(REPO, tiny_model) as server:
        yield server


def test_downloads_only_model_files_into_the_hf_cache_with_byte_progress(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    proc = download(["--repo", REPO, "--revision", "main", "--output", str(out)], tmp_path, hub.url)
    assert proc.returncode == 0, proc.stderr
    assert names(out) == sorted(hub.files) == names(snapshot(tmp_path))  # README.md is not a model file
    assert "README.md" not in {name for name, _ in hub.ranges}
    for name in names(out):
        assert digest(out / name) == digest(tiny_model / name)
        # one copy on disk: the model directory's files are the cache's blobs, not links into the cache
        assert not (out / name).is_symlink() and os.path.samefile(out / name, snapshot(tmp_path) / name)
    events = read_events(tmp_path / "events.jsonl")
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == sum(len(d) for d in hub.files.values())
    assert progress[-1]["unit"] == "bytes" and len(progress) >= 2
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "model" and artifact["commit"] == COMMIT and artifact["path"] == str(out)
    assert json.loads((out / ".w4tui-download.json").read_text())["commit"] == COMMIT


def test_a_cut_transfer_resumes_with_a_range_request_and_a_second_run_fetches_nothing(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    hub.cuts[SHARD] = [11 << 20]  # after the library's first 10 MiB chunk
    proc = download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url)
    assert proc.returncode == 0, proc.stderr
    assert "Trying to resume" in proc.stdout and not proc.stderr  # the library's warning goes to the log
    resumed = [int(re.fullmatch(r"bytes=(\d+)-", r).group(1)) for name, r in hub.ranges if name == SHARD and r]
    assert resumed and 0 < resumed[0] <= 11 << 20
    assert digest(out / SHARD) == digest(tiny_model / SHARD)
    before = len(hub.ranges)
    assert download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url).returncode == 0
    assert len(hub.ranges) == before


def test_a_download_that_keeps_failing_is_one_line_and_the_next_run_continues(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    hub.cuts[SHARD] = [1_000_000] * 10  # more cuts than the library retries
    first = download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert first.stderr.strip().splitlines()[-1].startswith(f"error: {REPO}: download interrupted (")
    assert "run again to continue" in first.stderr
    assert not (out / SHARD).exists() and not (snapshot(tmp_path) / SHARD).exists()  # never a half file
    assert (snapshot(tmp_path) / "model-00001-of-00002.safetensors").is_file()  # what completed is kept
    hub.cuts.clear()
    fetched = len(hub.ranges)
    second = download(["--repo", REPO, "--output", str(out)], tmp_path, hub.url)
    assert second.returncode == 0, second.stderr
    assert {name for name, _ in hub.ranges[fetched:]} == {SHARD}  # only what was missing
    assert digest(out / SHARD) == digest(tiny_model / SHARD)


def test_a_download_that_differs_from_the_hubs_checksum_is_refused(hub, tmp_path):
    hub.corrupt.add(SHARD)
    proc = download(["--repo", REPO, "--output", str(tmp_path / "m")], tmp_path, hub.url)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: {(snapshot(tmp_path) / SHARD).resolve()}: sha256 checksum of {SHARD} differs from the Hub's "
        "(delete that file from the Hugging Face cache and run again)"
    )
    assert not (tmp_path / "m" / SHARD).exists()


def test_a_model_in_the_hf_cache_is_found_offline_without_downloading(tiny_model, tmp_path):
    with HubStandIn(REPO, tiny_model) as hub:
        assert download(["--repo", REPO, "--output", str(tmp_path / "first")], tmp_path, hub.url).returncode == 0
    # The Hub is gone: offline mode, then a Hub that does not answer, both use the cached snapshot.
    for out, kwargs in (("offline", {"offline": True}), ("unreachable", {"endpoint": "http://127.0.0.1:9"})):
        proc = download(["--repo", REPO, "--output", str(tmp_path / out)], tmp_path, **kwargs)
        assert proc.returncode == 0, proc.stderr
        assert "found in the Hugging Face cache" in proc.stdout
        for name in names(snapshot(tmp_path)):
            assert os.path.samefile(tmp_path / out / name, snapshot(tmp_path) / name)
        artifact = next(e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "artifact")
        assert artifact["commit"] == COMMIT and artifact["path"] == str(tmp_path / out)


def test_a_model_dir_the_former_client_downloaded_is_used_without_downloading_again(hub, tiny_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    record = {"repo": REPO, "revision": "main", "commit": COMMIT, "files": {n: len(d) for n, d in hub.files.items()}}
    (out / ".w4tui-download.json").write_text(json.dumps(record))
    for kwargs in ({"endpoint": hub.url}, {"endpoint": hub.url}, {"offline": True}):
        proc = download(["--repo", REPO, "--output", str(out)], tmp_path, **kwargs)
        assert proc.returncode == 0, proc.stderr
        assert hub.ranges == [] and not snapshot(tmp_path).exists()
    assert names(out) == sorted(hub.files) and all(digest(out / n) == digest(tiny_model / n) for n in names(out))


def test_offline_without_the_model_in_the_cache_is_one_line(tmp_path):
    proc = download(["--repo", REPO, "--output", str(tmp_path / "m")], tmp_path, offline=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: HF_HUB_OFFLINE is set and {REPO} (main) is not in the Hugging Face cache")


def test_unknown_repo_is_one_clear_line(hub, tmp_path):
    proc = download(["--repo", "Qwen/Nope", "--output", str(tmp_path / "m")], tmp_path, hub.url)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: Qwen/Nope: no such model on the Hub (or it is private: set HF_TOKEN)"


def test_gated_repo_and_unknown_revision_are_one_line(tiny_model, tmp_path):
    with HubStandIn(REPO, tiny_model, gated=True) as hub:
        proc = download(["--repo", REPO, "--output", str(tmp_path / "m")], tmp_path, hub.url)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {REPO} is gated (accept its licence on the Hub and set HF_TOKEN)"
    with HubStandIn(REPO, tiny_model) as hub:
        proc = download(["--repo", REPO, "--revision", "v9", "--output", str(tmp_path / "m")], tmp_path, hub.url)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {REPO}: no revision 'v9' (check [model] revision in config.toml)"


def test_unreachable_hub_says_what_to_do(tmp_path):
    proc = download(["--repo", REPO, "--output", str(tmp_path / "m")], tmp_path, "http://127.0.0.1:9")
    assert proc.returncode == 1 and "cannot reach the Hub" in proc.stderr and "Traceback" not in proc.stderr


def test_local_directory_is_copied(tiny_model, tmp_path):
    out = tmp_path / "copy"
    proc = download(["--repo", str(tiny_model), "--output", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    shard = "model-00001-of-00002.safetensors"
    assert digest(out / shard) == digest(tiny_model / shard) and not os.path.samefile(out / shard, tiny_model / shard)
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
    assert error.startswith("error: ") and "5.0 KB free" in error and "choose another directory" in error
    assert not any(p.suffix == ".safetensors" for p in out.rglob("*"))
    assert read_events(tmp_path / "events.jsonl")[-1]["kind"] == "error"
