"""Pilot tests: the recorded workspace as each pane shows it, pane keys, help, palette, themes, quit."""

from __future__ import annotations

import pytest
import tui_workspace as ws
from textual.widgets import DataTable, Static
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, text_of, until, utc  # noqa: F401

from w4tui.settings import load_settings, save_setting
from w4tui.ui.screens.help import HelpScreen
from w4tui.ui.widgets.dialogs import TextViewScreen

pytestmark = pytest.mark.anyio


async def test_training_pane_rebuilds_a_finished_run_from_its_events(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        pane = app.screen.query_one("#training")
        state = pane.state
        assert pane.run.id == "20251126-180000-train-b002"
        assert (state.step, state.total_steps, state.final) == (50, 50, "succeeded")
        assert len(state.losses) == 50 and len(state.eval_losses) == 5
        assert state.last_checkpoint_step == 50 and state.device == "mps"
        head = text_of(pane.query_one("#training-head", Static))
        assert "✓ succeeded" in head and "50/50 steps" in head and "device mps" in head
        assert f"loss {state.losses[-1][1]:.4f}" in head
        # the accelerator memory of that run reached the memory pane (through the screen)
        await pilot.press("2")
        memory = app.screen.query_one("#memory-body", Static)
        await until(pilot, lambda: "RAM" in text_of(memory), what="a system sample")
        body = text_of(memory)
        assert "mps alloc" in body and "21.3 GB" in body and "RAM" in body and "8 cores" in body  # 21.3e9 bytes


async def test_pane_keys_show_one_pane_on_a_small_terminal_and_several_on_a_big_one(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        for key, pane_id in zip("123456", ("training", "memory", "artifacts", "ollama", "stages", "logs")):
            await pilot.press(key)
            shown = [p.PANE_ID for p in screen.panes() if p.display]
            assert shown == [pane_id] and screen.active == pane_id
            assert screen.focused is not None and pane_id in [a.id for a in screen.focused.ancestors_with_self]
    app = make_app(recorded)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert {p.PANE_ID for p in screen.panes() if p.display} == {"training", "memory", "stages", "logs"}
        await pilot.press("3")
        assert {p.PANE_ID for p in screen.panes() if p.display} == {"training", "memory", "stages", "artifacts"}
        await pilot.press("1")  # an always-shown pane keeps the lower-right one
        assert screen.pane("artifacts").display and screen.active == "training"
        await pilot.click("#pane-bar", offset=(60, 0))  # the mouse works on the pane bar too
        assert screen.active != "training"


async def test_failed_stage_shows_its_error_event_and_log_tail(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5", "down", "down", "down")  # convert
        await settle(pilot)
        detail = text_of(app.screen.query_one("#stage-detail", Static))
        assert "✗ failed" in detail and "exit 1" in detail
        assert "error: no space left on device writing 20251126-1800-f16.gguf" in detail
        assert "hint: free 15.2 GB" in detail
        assert "OSError: [Errno 28] No space left on device" in detail  # the log's tail
        table = app.screen.query_one("#stages-table", DataTable)
        assert "failed" in str(table.get_cell("convert", "status"))
        assert "never run" in str(table.get_cell("quantize", "status"))


async def test_logs_pane_lists_runs_and_shows_the_selected_runs_output(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        logs = app.screen.query_one("#logs")
        log = app.screen.query_one("#run-log")
        assert logs.run.stage == "convert" and "No space left on device" in "\n".join(logs.lines)
        assert "No space left on device" in text_of(app.screen.query_one("#log-tail"))  # following: the tail
        await pilot.press("down", "down")  # the train run
        await settle(pilot)
        assert logs.run.stage == "train" and "step 50/50" in "\n".join(logs.lines)
        await pilot.press("o")  # scroll the whole log: following stops, the scrollable log has it all
        assert log.has_focus and log.display and not logs.following
        assert log.lines[:2] == ["step 1/50 loss 2.8203", "step 2/50 loss 2.6976"] and len(log.lines) >= 50
        await pilot.press("o")
        assert app.screen.query_one("#runs-table").has_focus
        await pilot.press("f")
        assert logs.following is True and not log.display and "following the log" in notifications(app)
        await pilot.press("f")
        assert logs.following is False and "stopped following" in notifications(app)
        await pilot.press("f")
        # l in the Stages pane jumps to a stage's last run here
        await pilot.press("5", "down", "down", "l")
        await settle(pilot)
        assert app.screen.active == "logs" and logs.run.stage == "merge"


async def test_artifacts_pane_lists_disk_with_lineage_and_gguf_header(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        pane = app.screen.query_one("#artifacts")
        kinds = [(a.kind, a.name) for a in pane.artifacts]
        assert kinds == [
            ("model", "base"),
            ("adapter", ws.BUILD),
            ("checkpoint", "step-0000050"),
            ("checkpoint", "step-0000040"),
            ("merged", ws.BUILD),
            ("gguf", f"{ws.OLD}-f16.gguf"),
        ]
        gguf = pane.artifacts[-1]
        assert (gguf.gguf.architecture, gguf.gguf.quantization, gguf.gguf.tensors, gguf.gguf.context_length) == (
            "qwen2",
            "F16",
            3,
            32768,
        )
        assert gguf.deployed == (f"web4-agent:build-{ws.OLD}",) and gguf.verified is True and gguf.latest
        merged = pane.artifacts[4]
        assert merged.parent.endswith(f"adapters/{ws.BUILD}") and merged.run_id == "20251126-182600-merge-b003"
        await pilot.press("ctrl+end", "i")  # inspect the GGUF
        await settle(pilot)
        assert isinstance(app.screen, TextViewScreen)
        text = text_of(app.screen.query_one("#text", Static))
        for expected in (
            "architecture    qwen2",
            "quantization    F16",
            "tensors         3",
            "context length  32768",
            f"deployed as web4-agent:build-{ws.OLD}",
            "verified    passed",
        ):
            assert expected in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TextViewScreen)


async def test_help_lists_every_binding_and_the_palette_every_action(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        ids = {b.id for pane in screen.panes() for b in pane.BINDINGS}
        commands = {c.title for c in app.get_system_commands(screen)}
        for pane in screen.panes():
            assert f"Show {pane.TITLE}" in commands
            for b in pane.BINDINGS:
                assert b.id and f"{pane.TITLE}: {b.description}" in commands
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_ids = {b.id for _, group in app.screen.groups for b in group}
        assert ids | {"app.quit", "app.theme", "app.help", "pane.logs", "form.launch"} <= help_ids
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("ctrl+p")
        await pilot.press(*"Show Logs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.active == "logs"
        await pilot.press("ctrl+r")  # refresh: everything is read again, nothing breaks
        await settle(pilot)


def highlighted_command(app) -> str:
    from textual.command import CommandList, CommandPalette

    if not isinstance(app.screen, CommandPalette):
        return ""
    commands = app.screen.query_one(CommandList)
    if commands.highlighted is None:
        return ""
    prompt = commands.get_option_at_index(commands.highlighted).prompt
    return getattr(prompt, "plain", str(prompt))


async def test_theme_choice_persists_and_a_broken_theme_file_is_a_notification(recorded):
    themes = recorded.paths.state / "themes"
    themes.mkdir(parents=True)
    (themes / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "#ff8800"\ndark = false\n')
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "w4tui-dark"
        assert {"w4tui-dark", "w4tui-light", "mine"} <= set(app.available_themes)
        assert any("broken.toml: 'primary' = 'not-a-colour' is not a colour" in n for n in notifications(app))
        await pilot.press("ctrl+t")
        await pilot.press(*"w4tui-light")
        # the palette searches in the background: Enter picks what is highlighted when it arrives
        await until(pilot, lambda: "w4tui-light" in highlighted_command(app), what="w4tui-light highlighted")
        await pilot.press("enter")
        await settle(pilot)
        assert app.theme == "w4tui-light"
    assert load_settings(recorded)[0]["theme"] == "w4tui-light"
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "w4tui-light"
    save_setting(recorded, "theme", "gone")
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "w4tui-dark"
        assert any("theme 'gone'" in n for n in notifications(app))


async def test_keymap_in_settings_rebinds_by_id(recorded):
    save_setting(recorded, "keymap", {"stages.start": "g"})
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("5", "g")
        await until(pilot, lambda: type(app.screen).__name__ == "StageFormScreen", what="the form")


async def test_quit_key_exits(recorded):
    app = make_app(recorded)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
