"""Shared fixtures: a tiny real-format Qwen2 model (built once per session) and an isolated config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from w4tui.demo.tinymodel import build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny Qwen2 model in HF layout (2 bf16 shards + index, real Qwen2.5 tokenizer). Read-only."""
    return build_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", seed=0)


@pytest.fixture
def config_file(tmp_path, monkeypatch) -> Path:
    """An empty user config in a temp dir (all defaults, paths relative to tmp_path), selected via env."""
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("W4TUI_CONFIG", str(path))
    return path


@pytest.fixture(autouse=True)
def _no_real_ollama(monkeypatch):
    # Never talk to a real server from tests unless a test points OLLAMA_HOST at its stand-in.
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
