"""Fixtures for the quantize/deploy/verify tests (import the ones a test file uses from here):

- ``ollama``: an Ollama stand-in with the library model, OLLAMA_HOST pointing at it, a temp config;
  every test that uses it runs twice, against the docs-era and the 0.30+ stand-in (``ERAS``).
- ``modern_ollama``: the 0.30+ stand-in only, for what older servers do not do.
- ``tiny_f16_gguf`` / ``tiny_q8_gguf``: the tiny Qwen2 model as GGUF, made by stages.convert_gguf.
- ``run_stage``: run a stage's main() in this process (fast) the way the runner does (W4TUI_EVENTS),
  returning exit code, events and the stderr line.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from ollama_standin import OllamaStandIn
from shared_builds import linked, shared_build

from core.events import read_events


@dataclass
class StageResult:
    rc: int
    events: list[dict]
    stderr: str

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]

    @property
    def artifact(self) -> dict:
        return self.of("artifact")[-1]


@pytest.fixture
def run_stage(tmp_path):
    counter = iter(range(1000))

    def run(module: str, *args, env: dict | None = None) -> StageResult:
        events = tmp_path / "runs" / f"{module}-{next(counter)}" / "events.jsonl"
        events.parent.mkdir(parents=True)
        saved = dict(os.environ)
        os.environ.update({"W4TUI_EVENTS": str(events), "W4TUI_RUN_ID": "test", **(env or {})})
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                rc = importlib.import_module(f"stages.{module}").main([str(a) for a in args])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return StageResult(rc, read_events(events), stderr.getvalue())

    return run


ERAS = {"docs-era": "0.5.13", "0.30+": "0.33.0"}  # what docs/api.md describes; what the v0.33 source does


@pytest.fixture(params=list(ERAS.values()), ids=list(ERAS))
def ollama(request, monkeypatch, config_file):
    with OllamaStandIn(version=request.param) as server:
        server.add_library_model()
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        yield server


@pytest.fixture
def modern_ollama(monkeypatch, config_file):
    with OllamaStandIn(version=ERAS["0.30+"]) as server:
        server.add_library_model()
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        yield server


def _convert(model: Path, out: Path, outtype: str) -> Path:
    from stages.convert_gguf import main

    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["--model", str(model), "--output", str(out), "--outtype", outtype]) == 0
    return out


def _shared_gguf(tmp_path_factory, model: Path, name: str, outtype: str) -> Path:
    """Built once per run for every worker (shared_builds); read-only: copy it to change it."""
    return shared_build(tmp_path_factory, name, lambda d: _convert(model, d / name, outtype))


# Each test gets the shared GGUF hard-linked in a folder of its own (deploy writes a Modelfile beside it).
@pytest.fixture
def tiny_f16_gguf(tmp_path_factory, tiny_model) -> Path:
    return linked(tmp_path_factory, _shared_gguf(tmp_path_factory, tiny_model, "tiny-f16.gguf", "f16"))


@pytest.fixture
def tiny_f32_gguf(tmp_path_factory, tiny_model) -> Path:
    return linked(tmp_path_factory, _shared_gguf(tmp_path_factory, tiny_model, "tiny-f32.gguf", "f32"))


@pytest.fixture
def tiny_q8_gguf(tmp_path_factory, tiny_model) -> Path:
    return linked(tmp_path_factory, _shared_gguf(tmp_path_factory, tiny_model, "tiny-Q8_0.gguf", "q8_0"))


@pytest.fixture
def k_quant_f16_gguf(tmp_path_factory) -> Path:
    """Rows of 256 values, so K-quants apply for real (the tiny model's 64 fall back to Q5_0/Q8_0)."""
    from w4tui.demo.tinymodel import Shape, build_model

    def build(root: Path) -> Path:
        model = build_model(
            root / "m256", Shape(hidden=256, layers=1, ffn=512, heads=4, kv_heads=2, tied=True), shards=1
        )
        return _convert(model, root / "m256-f16.gguf", "f16")

    return linked(tmp_path_factory, shared_build(tmp_path_factory, "k-quant", build))
