"""The w4tui app: themes, settings, the command palette, and ``run_tui`` for the CLI.

Importing this must stay cheap (the first frame is due in a third of a second) and must never pull in
torch, transformers or peft: heavy modules (gguf, ollama, httpx) are imported inside workers.
"""

from __future__ import annotations

import difflib
import logging
import sys
import time
from collections.abc import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from core import specs
from core.config import Config
from w4tui.nightly.holder import ScheduleHolder
from w4tui.runs.runner import Runner
from w4tui.settings import load_settings, save_setting, settings_path
from w4tui.ui.screens import help, prompt, stage_form  # noqa: F401 (their screens count)
from w4tui.ui.screens.help import HelpScreen
from w4tui.ui.screens.main import PANES, MainScreen
from w4tui.ui.screens.stage_form import StageFormScreen
from w4tui.ui.themes import DEFAULT_THEME, builtin_dir, load_themes
from w4tui.ui.widgets import dialogs  # noqa: F401
from w4tui.ui.widgets.dialogs import ConfirmScreen
from w4tui.ui.widgets.pane import Pane

log = logging.getLogger(__name__)


class W4App(App[int]):
    TITLE = "w4tui"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Quit; running stages keep running"),
        Binding("ctrl+t", "change_theme", "Theme", id="app.theme", tooltip="Pick a theme (the choice is kept)"),
        Binding(
            "ctrl+r",
            "refresh_all",
            "Refresh",
            id="app.refresh",
            show=False,
            tooltip="Read runs, artifacts and Ollama again now",
        ),
    ]

    def __init__(self, config: Config, clock: Callable[[], float] = time.time, sampler=None, scanner=None) -> None:
        super().__init__()
        self.config = config
        self.runner = Runner(config)
        self.clock = clock
        self._sampler, self._scanner = sampler, scanner
        self.schedule = ScheduleHolder()  # the nightly schedule this TUI holds while no daemon does
        self._problems: list[str] = []
        self._setup_themes()

    def _setup_themes(self) -> None:
        settings, problem = load_settings(self.config)
        if problem:
            self._problems.append(problem)
        themes, problems = load_themes(builtin_dir(), self.config.paths.state / "themes")
        self._problems += problems
        for theme in themes:
            self.register_theme(theme)
        wanted = settings.get("theme", DEFAULT_THEME)
        if wanted not in self.available_themes:
            if "theme" in settings:
                self._problems.append(f"theme '{wanted}' (from settings) is not available; using {DEFAULT_THEME}")
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = wanted
        keymap = settings.get("keymap", {})
        if isinstance(keymap, dict) and keymap:
            self.set_keymap(self._known_keys({str(k): str(v) for k, v in keymap.items()}))
        self._saved_theme = wanted

    def _known_keys(self, keymap: dict[str, str]) -> dict[str, str]:
        """The keymap without ids no binding has: each mistyped one is reported (it would do nothing)."""
        known = binding_ids()
        for wrong in sorted(set(keymap) - known):
            close = difflib.get_close_matches(wrong, sorted(known), n=1)
            self._problems.append(
                f"[keymap] in {settings_path(self.config)}: no key has the id '{wrong}', ignored"
                + (f" (did you mean '{close[0]}'?)" if close else "; ? lists every id")
            )
        return {k: v for k, v in keymap.items() if k in known}

    def get_default_screen(self) -> Screen:
        return MainScreen(self._sampler, self._scanner, self.schedule)

    def on_mount(self) -> None:
        for problem in self._problems:
            self.notify(problem, title="settings", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def on_unmount(self) -> None:
        self.schedule.shutdown()  # the lock and the scheduler go with the app; a night running keeps running

    def _theme_changed(self, theme) -> None:
        if theme.name != self._saved_theme:
            self._saved_theme = theme.name
            self.run_worker(
                lambda: save_setting(self.config, "theme", theme.name),
                thread=True,
                group="settings",
                exit_on_error=False,
                description="save the theme",
            )

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.binding_groups()))

    def action_refresh_all(self) -> None:
        screen = self.screen
        if isinstance(screen, MainScreen):
            screen.poll_runs()
            for pane in screen.panes():
                for name in ("rescan", "refresh_models"):
                    if hasattr(pane, name) and pane.ready:
                        getattr(pane, name)()

    # -- every action, for help and the command palette -----------------------------------------
    def binding_groups(self) -> list[tuple[str, list[Binding]]]:
        main = MainScreen
        groups = [
            (
                "anywhere",
                [
                    *self._keyed(W4App.BINDINGS),
                    *self._keyed(main.BINDINGS),
                    Binding("ctrl+p", "command_palette", "Command palette", id="app.palette"),
                    Binding("tab", "focus_next", "Next pane / widget", id="app.focus_next"),
                ],
            )
        ]
        screen = self.screen if isinstance(self.screen, MainScreen) else None
        for pane in screen.panes() if screen else []:
            if pane.BINDINGS:
                groups.append((pane.TITLE, self._keyed(pane.BINDINGS)))
        groups.append(("stage form", self._keyed(StageFormScreen.BINDINGS)))
        groups.append(("confirm", self._keyed(ConfirmScreen.BINDINGS)))
        return groups

    def _keyed(self, bindings: Iterable) -> list[Binding]:
        """Bindings with the user's keymap applied, so help shows the keys that work."""
        out = []
        for b in bindings:
            b = b if isinstance(b, Binding) else Binding(*b)
            key = self._keymap.get(b.id, b.key) if b.id else b.key
            out.append(Binding(key, b.action, b.description, id=b.id, tooltip=b.tooltip))
        return out

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, MainScreen):
            return
        yield SystemCommand("Help: keys", "Every key and what it does", self.action_help)
        yield SystemCommand("Refresh", "Read runs, artifacts and Ollama again now", self.action_refresh_all)

        for spec in specs.STAGES:  # (so "train" finds "Start train", not only "Stages: Start…")
            yield SystemCommand(
                f"Start {spec.name}",
                f"{spec.title}: its form, arguments from the config",
                lambda name=spec.name: screen.launch(name),
            )
        yield SystemCommand("Start pipeline", "Run all stages in order (detached)", lambda: screen.launch("pipeline"))
        for name in PANES:
            pane = screen.pane(name)
            yield SystemCommand(f"Show {pane.TITLE}", f"Pane {pane.KEY}", lambda p=name: screen.action_show_pane(p))
            for b in pane.BINDINGS:
                yield SystemCommand(
                    f"{pane.TITLE}: {b.description}",
                    b.tooltip or b.description,
                    lambda p=name, a=b.action: self._pane_action(screen, p, a),
                )

    def _pane_action(self, screen: MainScreen, pane_id: str, action: str) -> None:
        screen.action_show_pane(pane_id)
        pane = screen.pane(pane_id)
        self.call_later(pane.run_action, action)


def binding_ids() -> set[str]:
    """Every binding id of the app, its screens and panes: what a [keymap] may name."""

    def every(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in every(sub))]

    classes = [W4App, MainScreen, *every(Pane), *every(ModalScreen)]
    return {b.id for cls in classes for b in cls.BINDINGS if isinstance(b, Binding) and b.id}


def live_runs_message(runner: Runner) -> str:
    live = [r for r in runner.runs() if r.live]
    if not live:
        return ""
    lines = [
        f"{len(live)} run{'s' if len(live) > 1 else ''} keep{'s' if len(live) == 1 else ''} running in the background:"
    ]
    cli = runner.config.cli  # with the --config in use: the hints are pasted into another shell
    lines += [f"  {r.stage:<9} {r.id}  ({cli} logs -f {r.id} · {cli} cancel {r.id})" for r in live]
    lines.append(f"Run `{cli}` again to re-attach.")
    return "\n".join(lines)


def run_tui(config: Config) -> int:
    """Run the TUI until the user quits; say what keeps running. Returns the exit code."""
    app = W4App(config)
    code = app.run()
    message = live_runs_message(app.runner)
    if message:
        print(message, file=sys.stderr)
    return int(code or app.return_code or 0)
