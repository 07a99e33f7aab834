"""The Ollama pane's chat: several turns with a build, each sending the whole conversation to /api/chat
(with the system prompt the user typed), the answers rendered as Markdown."""

from __future__ import annotations

import pytest
from test_tui_ollama import open_pane, select, server  # noqa: F401
from textual.widgets import Input, Markdown
from tui_helpers import anyio_backend, make_app, recorded, until, utc  # noqa: F401

from w4tui.ui.screens.chat import ChatScreen


@pytest.mark.anyio
async def test_a_multi_turn_chat_sends_the_history_and_renders_markdown(recorded, server):
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot)
        select(pane, "web4-agent:latest")
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, ChatScreen) and screen.model == "web4-agent:latest"

        async def say(text: str, turn: int) -> None:
            screen.query_one("#say", Input).value = text
            screen.query_one("#say", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: len(screen.messages) == 2 * turn and not screen.busy, what=f"answer {turn}")

        await say("Create a PDCA for component creation", 1)
        assert screen.stats.startswith("done") and "tok/s" in screen.stats
        assert "## Plan" in screen.messages[1]["content"]
        screen.query_one("#system", Input).value = "You are terse."
        await say("Now the same for a service", 2)
        sent = server.chats[-1]
        assert sent["model"] == "web4-agent:latest"
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
        assert sent["messages"][0]["content"] == "You are terse."
        assert sent["messages"][1]["content"] == "Create a PDCA for component creation"
        answers = screen.query(Markdown)
        assert len(answers) == 2 and "## Plan" in answers.first().source
        await pilot.press("ctrl+l")
        assert screen.messages == [] and not screen.query(Markdown)
        await pilot.press("escape")
        assert app.screen is not screen
