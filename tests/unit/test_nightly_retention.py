"""Retention keeps exactly [nightly] keep builds, never removes what latest/previous serve (asked from
Ollama, so a rolled-back latest is found too), deletes a verified build's F16, and touches nothing
outside [paths] outputs or outside the ledger."""

from __future__ import annotations

import pytest
from ollama_standin import OllamaStandIn

from core.config import load_config
from w4tui.nightly import retention
from w4tui.nightly.ledger import Ledger


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    config_file = tmp_path / "config.toml"
    config_file.write_text("[nightly]\nkeep = 2\n")
    config = load_config(config_file)
    with OllamaStandIn() as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.url)
        ledger = Ledger.open(config)
        for i in range(1, 6):
            name = f"nightly-{i}"
            adapter = config.paths.outputs / "adapters" / name
            adapter.mkdir(parents=True)
            (adapter / "adapter_model.safetensors").write_bytes(b"x" * 10)
            gguf = config.paths.outputs / "gguf" / f"{name}-Q4_K_M.gguf"
            gguf.parent.mkdir(parents=True, exist_ok=True)
            gguf.write_bytes(b"GGUF")
            f16 = gguf.with_name(f"{name}-f16.gguf")
            f16.write_bytes(b"GGUF")
            tag = f"web4-agent:{name}"
            ollama.add_model(tag)
            ledger.upsert_build(
                name,
                night=f"now-{i}",
                adapter=str(adapter),
                gguf=str(gguf),
                f16=str(f16),
                tag=tag,
                verify="passed",
                promoted=int(i in (1, 2, 4)),
                promoted_at=float(i),
            )
            ledger._update("builds", "build", name, {"created": float(i)})
        yield config, ledger, ollama


def test_keeps_exactly_keep_builds_and_what_latest_and_previous_serve(workspace):
    config, ledger, ollama = workspace
    # latest was rolled back to build 1; previous serves build 2; build 4 was promoted last.
    ollama.models["web4-agent:latest"] = dict(ollama.models["web4-agent:nightly-1"])
    ollama.models["web4-agent:previous"] = dict(ollama.models["web4-agent:nightly-2"])
    lines = retention.apply(config, ledger, "nightly-5")
    alive = {b["build"] for b in ledger.builds() if not b["deleted"]}
    assert alive == {"nightly-5", "nightly-4", "nightly-2", "nightly-1"}  # newest 2 + what is served
    assert [line for line in lines if "removed build" in line] == [
        "retention: removed build nightly-3 (web4-agent:nightly-3, nightly-3-Q4_K_M.gguf, nightly-3-f16.gguf, nightly-3)"
    ]
    assert "web4-agent:nightly-3" not in ollama.models and "web4-agent:nightly-1" in ollama.models
    assert not (config.paths.outputs / "adapters" / "nightly-3").exists()
    assert (config.paths.outputs / "adapters" / "nightly-1").exists()
    assert not (config.paths.outputs / "gguf" / "nightly-5-f16.gguf").exists()  # verified: its F16 goes
    assert (config.paths.outputs / "gguf" / "nightly-5-Q4_K_M.gguf").exists()
    assert ledger.build("nightly-5")["f16_deleted"] and not ledger.build("nightly-5")["deleted"]


def test_ollama_down_keeps_the_builds_whose_tags_it_cannot_remove(workspace, monkeypatch):
    config, ledger, ollama = workspace
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    lines = retention.apply(config, ledger)
    assert all(not b["deleted"] for b in ledger.builds())
    assert any("could not be removed (is Ollama up?)" in line for line in lines)


def test_nothing_outside_outputs_is_deleted(workspace, tmp_path):
    config, ledger, ollama = workspace
    elsewhere = tmp_path / "elsewhere" / "adapter"
    elsewhere.mkdir(parents=True)
    ledger.upsert_build("nightly-0", night="now-0", adapter=str(elsewhere), verify="failed")
    ledger._update("builds", "build", "nightly-0", {"created": 0.0})
    retention.apply(config, ledger)
    assert elsewhere.exists() and ledger.build("nightly-0")["deleted"]
