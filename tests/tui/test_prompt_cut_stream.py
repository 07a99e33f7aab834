"""The test prompt with a stream that ends without Ollama's final part (llm/llama_server.go stops after
more than 30 repeated tokens): the screen says it was cut off, never "done (stop)" (issue 12 item 2)."""

from __future__ import annotations

import pytest
from ollama_standin import OllamaStandIn
from tui_helpers import anyio_backend, make_app, recorded, settle, until, utc  # noqa: F401

from w4tui.ui.screens.prompt import PromptScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(monkeypatch):
    with OllamaStandIn(version="0.33.0") as s:
        s.add_model("web4-agent:latest")
        s.behaviour["web4-agent:latest"] = "newlines"  # whitespace-only tokens repeat too
        monkeypatch.setenv("OLLAMA_HOST", s.url)
        yield s


async def test_a_stream_cut_for_repetition_is_not_shown_as_done(recorded, server):
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(PromptScreen(app.config, "web4-agent:latest", "Create a PDCA for component creation"))
        await settle(pilot)
        screen = app.screen
        await pilot.press("enter")
        await until(pilot, lambda: screen.stats.startswith(("cut off", "done")), what="the end of the answer")
        assert screen.stats == "cut off: the stream ended without Ollama's final part (a degenerate repetition)"
        assert screen.answer.startswith("# PDCA")
