"""Shared fixtures: a tiny real-format Qwen2 model (built once per run, see shared_builds), an isolated
config; and what keeps the suite correct under pytest-xdist (scripts/test.sh runs it on every core)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shared_builds import check_unchanged, shared_build

from w4tui.demo.tinymodel import build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny Qwen2 model in HF layout (2 bf16 shards + index, real Qwen2.5 tokenizer). Read-only."""
    return shared_build(tmp_path_factory, "tiny-qwen2", lambda d: build_model(d / "tiny-qwen2", seed=0))


@pytest.fixture(autouse=True)
def _shared_builds_stay_unchanged():
    yield
    check_unchanged()


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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items):
    # A module- or class-scoped fixture (a trained adapter, a built eval model) is made once per worker
    # that runs a test using it: the tests of a module that use one go to the same worker, so it is made
    # once. Every other test is spread over the workers one by one.
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for fd in (defs.name2fixturedefs.values() if defs else ()) for d in fd}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
