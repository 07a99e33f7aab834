"""Pilot tests for the Ollama pane against the stand-in server (the official client, real HTTP)."""

from __future__ import annotations

import pytest
from ollama_standin import OllamaStandIn
from textual.widgets import Input, Static
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, text_of, until, utc  # noqa: F401

from w4tui.ui.screens.prompt import PromptScreen
from w4tui.ui.widgets.dialogs import ConfirmScreen, TextInputScreen, TextViewScreen

pytestmark = pytest.mark.anyio
BUILD_A, BUILD_B = "web4-agent:build-20251125-2130", "web4-agent:build-20251126-1800"


@pytest.fixture
def server(monkeypatch):
    with OllamaStandIn() as s:
        s.add_library_model()
        s.add_model(BUILD_A)
        s.add_model(BUILD_B, quantize="Q8_0")
        for tag, build in (("latest", BUILD_B), ("previous", BUILD_A)):
            s.models[f"web4-agent:{tag}"] = dict(s.models[build])
        s.load("web4-agent:latest")
        monkeypatch.setenv("OLLAMA_HOST", s.url)
        yield s


def names(pane) -> list[str]:
    return [m["model"] for m in pane.snapshot.models]


async def open_pane(pilot):
    await pilot.press("4")
    pane = pilot.app.screen.query_one("#ollama")
    await until(pilot, lambda: pane.snapshot is not None and not pane.snapshot.error, what="the model list")
    await settle(pilot)
    return pane


def select(pane, model: str) -> None:
    rows = sorted(names(pane))
    pane.query_one("#ollama-table").move_cursor(row=rows.index(model))


async def test_lists_models_quantization_and_what_is_loaded(recorded, server):
    app = make_app(recorded)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = await open_pane(pilot)
        assert set(names(pane)) == {
            "qwen2.5-coder:7b-instruct-q4_K_M",
            BUILD_A,
            BUILD_B,
            "web4-agent:latest",
            "web4-agent:previous",
        }
        table = pane.query_one("#ollama-table")
        assert str(table.get_cell(BUILD_B, "quant")) == "Q8_0"
        assert str(table.get_cell(BUILD_B, "alias")) == "latest"  # the build latest points at
        assert str(table.get_cell(BUILD_A, "alias")) == "✓ previous"  # (the recorded verify run passed it)
        assert "●" in str(table.get_cell("web4-agent:latest", "run"))
        state = text_of(pane.query_one("#ollama-state", Static))
        assert server.url in state and "5 models" in state and "loaded: web4-agent:latest" in state


async def test_ollama_down_is_a_state_and_it_comes_back(recorded, monkeypatch):
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        pane = app.screen.query_one("#ollama")
        await until(pilot, lambda: pane.snapshot is not None, what="the first answer")
        assert pane.snapshot.error.startswith("Ollama is not reachable at http://127.0.0.1:9")
        state = text_of(pane.query_one("#ollama-state", Static))
        assert "not reachable" in state and "ollama serve" in state and "r asks now" in state
        await pilot.press("t")  # actions say why they cannot run, nothing raises
        assert any("Ollama is not reachable" in n for n in notifications(app))
        with OllamaStandIn() as s:
            s.add_library_model()
            monkeypatch.setenv("OLLAMA_HOST", s.url)
            await pilot.press("r")
            await until(pilot, lambda: not pane.snapshot.error, what="the server to be seen")
            assert names(pane) == ["qwen2.5-coder:7b-instruct-q4_K_M"]


async def test_test_prompt_streams_the_answer_with_tokens_per_second(recorded, server):
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot)
        select(pane, "web4-agent:latest")
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, PromptScreen) and screen.model == "web4-agent:latest"
        assert screen.query_one(Input).value == recorded.verify.prompts[0]
        await pilot.press("enter")
        await until(pilot, lambda: screen.stats.startswith("done"), what="the whole answer")
        assert "## Plan" in screen.answer and "## Act" in screen.answer
        assert "tok/s" in screen.stats and "tokens" in screen.stats
        assert server.generates[-1]["model"] == "web4-agent:latest"
        await pilot.press("escape")
        assert app.screen is not screen


async def test_modelfile_copy_delete_and_rollback(recorded, server):
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot)
        select(pane, BUILD_A)
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, TextViewScreen), what="the Modelfile")
        text = text_of(app.screen.query_one("#text", Static))
        assert "TEMPLATE" in text and "PARAMETER stop" in text
        await pilot.press("escape")

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, TextInputScreen), what="the copy dialog")
        app.screen.query_one(Input).value = "web4-agent:keep"
        await pilot.press("enter")
        await until(pilot, lambda: "web4-agent:keep" in names(pane), what="the copy in the list")
        assert server.models["web4-agent:keep"]["digest"] == server.models[BUILD_A]["digest"]

        select(pane, "web4-agent:keep")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete question")
        await pilot.press("n")
        await settle(pilot)
        assert "web4-agent:keep" in server.models
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete question")
        await pilot.press("y")
        await until(pilot, lambda: "web4-agent:keep" not in names(pane), what="the model to go")
        assert "web4-agent:keep" not in server.models

        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the rollback question")
        await pilot.press("y")
        await until(pilot, lambda: any("rolled back" in n for n in notifications(app)), what="the rollback")
        assert server.models["web4-agent:latest"]["digest"] == server.models[BUILD_A]["digest"]
        await pilot.press("b", "y")  # again: nothing to roll back, said in a notification
        await until(pilot, lambda: any("nothing to roll back" in n for n in notifications(app)), what="refusal")


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (200, 55)])
async def test_names_fit_the_pane_and_builds_stay_apart_after_a_theme_change(recorded, server, size):
    """Issue 13, item 4: three builds of one day, a theme change: each name still differs from the others,
    a cut one shows "…", the latest mark stays, and the loaded column stays inside the pane."""
    builds = [f"web4-agent:build-20261201-0954{second:02d}-Q4_K_M" for second in (10, 21, 32)]
    for build in builds:
        server.add_model(build)
    server.models["web4-agent:latest"] = dict(server.models[builds[1]])
    app = make_app(recorded)
    async with app.run_test(size=size) as pilot:
        pane = await open_pane(pilot)
        for _ in range(2):  # on a fresh start, then after a theme change (it redraws the table)
            table = pane.query_one("#ollama-table")
            shown = [str(table.get_cell(b, "name")) for b in builds]
            assert len(set(shown)) == 3, shown
            assert all(name == build or "…" in name for name, build in zip(shown, builds)), shown
            assert str(table.get_cell(builds[1], "alias")) == "latest"
            total = sum(column.get_render_width(table) for column in table.ordered_columns)
            assert total <= table.content_size.width, (total, table.content_size.width)
            app.theme = "w4tui-light" if app.theme != "w4tui-light" else "w4tui-dark"
            await settle(pilot)


async def test_promote_a_verified_build_and_refuse_an_unverified_one(recorded, server):
    """Issue 13: which build is previous, "promote this build", roll back to any earlier verified build."""
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot)
        await until(pilot, lambda: pane.verified(BUILD_A) is True, what="the verify result of the recorded runs")
        table = pane.query_one("#ollama-table")
        assert str(table.get_cell(BUILD_A, "alias")) == "✓ previous"  # verified, and what previous holds
        assert str(table.get_cell(BUILD_B, "alias")) == "latest"  # never verified in this workspace
        select(pane, BUILD_B)
        await pilot.press("p")
        await until(pilot, lambda: any("is not verified" in n for n in notifications(app)), what="the refusal")
        assert not isinstance(app.screen, ConfirmScreen)
        select(pane, BUILD_A)  # an earlier verified build: promoting it is a rollback to it
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert BUILD_B in text_of(app.screen.query_one(".hint"))  # what latest is now, kept as previous
        await pilot.press("y")
        await until(pilot, lambda: any("is now" in n for n in notifications(app)), what="the promotion")
        assert server.models["web4-agent:latest"]["digest"] == server.models[BUILD_A]["digest"]
        assert server.models["web4-agent:previous"]["digest"] == server.models[BUILD_B]["digest"]
        await until(pilot, lambda: str(table.get_cell(BUILD_A, "alias")) == "✓ latest", what="the marks to move")
