"""`w4tui adapter import SRC`: an adapter from a GPU box, from a folder or host:path (rsync over ssh, here
through a stand-in ssh that runs the remote side locally: no sshd on this machine). It lands whole in
outputs/adapters with its lineage and in the nightly ledger; a foreign or broken one is refused in one
line with nothing left behind, and nothing is ever replaced."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from conftest import assert_one_line, leftovers, listing, write_adapter

from core.config import load_config
from w4tui import adapter_import


@pytest.fixture
def home(workspace, tiny_model):
    """The Mac's workspace with the tiny model as the configured base."""
    (workspace / "config.toml").write_text(f'[model]\ndir = "{tiny_model}"\n')
    return workspace


@pytest.fixture
def trained(tmp_path):
    """What the GPU box's run left: the adapter, its record, and checkpoints that must stay there."""
    box = tmp_path / "box" / "adapters" / "big-run"
    write_adapter(box)
    (box / "training_run.json").write_text(
        json.dumps({"architecture": "Qwen2ForCausalLM", "ranks": 8, "global_batch": 64, "final_loss": 0.5})
    )
    (box / "checkpoints" / "step-0000100").mkdir(parents=True)
    (box / "checkpoints" / "step-0000100" / "training_state.pt").write_bytes(b"x" * 1000)
    return box


def test_a_folder_lands_whole_with_its_lineage_in_the_ledger(home, trained, cli):
    out = cli("adapter", "import", trained, "--name", "box-1")
    assert out.rc == 0, out.stderr
    target = home / "outputs" / "adapters" / "box-1"
    assert sorted(p.name for p in target.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "import.json",
        "training_run.json",
    ]  # never the checkpoints
    lineage = json.loads((target / "import.json").read_text())
    assert lineage["source"] == str(trained) and lineage["ranks"] == 8 and lineage["global_batch"] == 64
    assert "adapter build box-1" in out.stdout
    from w4tui.nightly.ledger import Ledger

    ledger = Ledger.open(load_config(None))
    try:
        assert ledger.build("box-1")["adapter"] == str(target)
    finally:
        ledger.close()
    steps = adapter_import.chain(load_config(None), "box-1")
    assert [s.stage for s in steps] == ["convert", "quantize", "deploy", "verify"]
    assert steps[0].args[steps[0].args.index("--adapter") + 1] == str(target)
    assert steps[-1].args[-1] == "--promote"


def test_rsync_is_given_host_path_and_only_the_adapter_files(tmp_path):
    cmd = adapter_import.rsync_command("localhost:/runs/adapters/big-run", tmp_path / "stage")
    assert cmd[0] == "rsync" and cmd[cmd.index("-e") + 1] == "ssh"
    assert cmd[-2:] == ["localhost:/runs/adapters/big-run/", f"{tmp_path / 'stage'}/"]
    assert "--protect-args" in cmd  # a path with spaces stays one path on the far side
    included = [a.split("=", 1)[1] for a in cmd if a.startswith("--include=")]
    assert included == ["adapter_config.json", "adapter_model.safetensors", "training_run.json"]
    assert cmd.index("--exclude=*") > max(cmd.index(f"--include={n}") for n in included)
    assert adapter_import.is_remote("gpu-box:/x") and adapter_import.is_remote("me@10.0.0.2:runs/x")
    assert not adapter_import.is_remote(str(tmp_path)) and not adapter_import.is_remote("./a:b")


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_host_path_comes_through_rsync(home, trained, tmp_path, cli, monkeypatch):
    # The stand-in ssh drops the host and runs rsync's remote half here, as sshd would on the box.
    ssh = tmp_path / "fake-ssh"
    ssh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(adapter_import.SSH_ENV, str(ssh))
    out = cli("adapter", "import", f"localhost:{trained}", "--name", "box-2")
    assert out.rc == 0, out.stderr
    target = home / "outputs" / "adapters" / "box-2"
    assert (target / "adapter_model.safetensors").read_bytes() == (trained / "adapter_model.safetensors").read_bytes()
    assert not (target / "checkpoints").exists()
    assert json.loads((target / "import.json").read_text())["source"] == f"localhost:{trained}"


REFUSED = {
    "another base's shape": (lambda a: write_adapter(a, hidden=128), "does not fit the base"),
    "a module the base lacks": (lambda a: write_adapter(a, layers=3), "model.layers.2.self_attn.q_proj.weight"),
    "another architecture": (
        lambda a: (a / "training_run.json").write_text(json.dumps({"architecture": "LlamaForCausalLM"})),
        "trained on a LlamaForCausalLM",
    ),
    "another base revision": (
        lambda a: (a / "training_run.json").write_text(json.dumps({"base_commit": "abc123"})),
        "trained on base revision abc123",
    ),
    "not PEFT": (lambda a: (a / "adapter_config.json").unlink(), "not a PEFT adapter (no adapter_config.json)"),
    "not LoRA": (
        lambda a: (a / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"})),
        "not LORA",
    ),
    "weights not safetensors": (
        lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x00" * 3),
        "not a safetensors file",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_foreign_or_broken_adapter_is_refused_in_one_line_and_nothing_stays(case, home, trained, cli, tiny_model):
    damage, culprit = REFUSED[case]
    damage(trained)
    if case == "another base revision":
        (tiny_model / ".w4tui-download.json").write_text(json.dumps({"commit": "def456"}))
    try:
        before = listing(home / "outputs")
        out = cli("adapter", "import", trained, "--name", "bad")
    finally:
        (tiny_model / ".w4tui-download.json").unlink(missing_ok=True)
    assert_one_line(out, 1, culprit)
    assert listing(home / "outputs") == before and leftovers(home / "outputs") == []


def test_nothing_is_replaced(home, trained, cli):
    mine = home / "outputs" / "adapters" / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    out = cli("adapter", "import", trained, "--name", "mine")
    assert_one_line(out, 1, "already exists; nothing is replaced")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
