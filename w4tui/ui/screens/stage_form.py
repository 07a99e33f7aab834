"""The form a stage is launched from: its arguments from the config, one field per flag, editable."""

from __future__ import annotations

import shlex

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Input, Label, Static

from w4tui.ui.sources.train_preview import missing, preview
from w4tui.ui.widgets.dialogs import Dialog


def split_args(args: list[str]) -> list[tuple[str, str | None]]:
    """``["--a", "1", "--flag", "--b", "2"]`` -> ``[("--a", "1"), ("--flag", None), ("--b", "2")]``."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((args[i], args[i + 1]))
            i += 2
        else:
            out.append((args[i], None))
            i += 1
    return out


PROFILE_HINT = "profiles: f1 dry (100 samples) · f2 mini (3,000) · f3 full"


class StageFormScreen(Dialog[list[str] | None]):
    DEFAULT_CSS = """
    StageFormScreen .dialog { max-width: 120; }
    StageFormScreen VerticalScroll { height: auto; max-height: 20; }
    StageFormScreen #preview { color: $text-muted; margin-bottom: 1; }
    StageFormScreen .dialog.-tall { height: 90%; }
    StageFormScreen .-tall VerticalScroll { height: 1fr; max-height: 100%; }
    StageFormScreen .row { height: 1; margin-bottom: 1; }
    StageFormScreen .row Label { width: 14; }
    StageFormScreen .row Input { width: 1fr; }
    StageFormScreen .row Checkbox { width: auto; min-width: 8; }
    StageFormScreen #problem { color: $error; }
    """
    BINDINGS = [
        Binding("ctrl+s", "launch", "Launch", id="form.launch", priority=True),
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        # A train form's profiles, one key each (function keys: letters type into the fields).
        Binding("f1", "profile('dry')", "dry (100)", id="form.profile_dry", tooltip="Train on 100 samples"),
        Binding("f2", "profile('mini')", "mini (3,000)", id="form.profile_mini", tooltip="Train on 3,000 samples"),
        Binding("f3", "profile('full')", "full", id="form.profile_full", tooltip="Train on every sample"),
    ]

    def __init__(
        self,
        title: str,
        args: list[str],
        note: str = "",
        blank: str | None = None,
        extra_hint: str = "",
        dataset=None,
    ) -> None:
        super().__init__()
        self.title_text, self.fields, self.note = title, split_args(args), note
        self.blank, self.extra_hint = blank, extra_hint  # blank: a flag the user must fill in
        self.dataset, self.preview = dataset, None  # a train form: samples, tokens, steps (redone on edits)

    def compose(self) -> ComposeResult:
        # A long form (train) takes the screen's height and scrolls its fields: the buttons stay in view.
        with Vertical(classes="dialog -tall" if len(self.fields) > 6 else "dialog"):
            yield Label(self.title_text, classes="title")
            if self.note:
                yield Static(self.note, id="problem")
            if self.dataset is not None:
                self.preview = missing(self.dataset)  # (known at once: the snapshot shows it)
                text = f"counting the samples and tokens in {self.dataset}…"
                yield Static(self.preview.describe({}) if self.preview else text, id="preview", markup=False)
            with VerticalScroll():
                for index, (flag, value) in enumerate(self.fields):
                    with Horizontal(classes="row"):
                        yield Label(flag)
                        if value is None:
                            yield Checkbox("on", value=True, id=f"f{index}", compact=True)
                        else:
                            yield Input(
                                "" if flag == self.blank else value,
                                id=f"f{index}",
                                compact=True,
                                placeholder="required" if flag == self.blank else "",
                            )
                with Horizontal(classes="row"):
                    yield Label("more flags")
                    yield Input(id="extra", compact=True, placeholder=self.extra_hint or "e.g. --epochs 1")
            # (the profile keys' hint, in a train form, until an error takes its place)
            profiles = any(flag == "--profile" for flag, _ in self.fields)
            yield Static(PROFILE_HINT if profiles else "", id="error", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Launch (ctrl+s)", id="launch", variant="primary", compact=True)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False, description="preview the dataset")
    def _preview(self) -> None:
        found = preview(self.dataset)
        self.app.call_from_thread(self._show_preview, found)

    def _show_preview(self, found) -> None:
        self.preview = found
        self.on_input_changed()

    def on_mount(self) -> None:
        width = max(len(flag) for flag, _ in [*self.fields, ("more flags", None)]) + 2
        for label in self.query(".row Label"):
            label.styles.width = width  # each flag whole (--gradient_accumulation)
        for field in self.query(Input):
            field.cursor_blink = False  # a steady cursor: no repaint twice a second, and one snapshot
        if self.dataset is not None and self.preview is None:
            self._preview()
        first = self.query("Input").first()
        empty = [i for i in self.query(Input) if not i.value and i.id != "extra"]
        (empty[0] if empty else first).focus()

    def args(self) -> list[str]:
        """The command-line arguments the form now says; ValueError names a field that needs a value."""
        out: list[str] = []
        for index, (flag, value) in enumerate(self.fields):
            if value is None:
                if self.query_one(f"#f{index}", Checkbox).value:
                    out.append(flag)
                continue
            text = self.query_one(f"#f{index}", Input).value.strip()
            if not text:
                raise ValueError(f"{flag} needs a value")
            out += [flag, text]
        try:
            out += shlex.split(self.query_one("#extra", Input).value)
        except ValueError as exc:
            raise ValueError(f"more flags: {exc}") from None
        return out

    def values(self) -> dict[str, str]:
        """Each flag's value as the form says now (before it is mounted: as it was given)."""
        if not self.is_mounted:
            return {flag: value for flag, value in self.fields if value is not None}
        return {
            flag: self.query_one(f"#f{i}", Input).value.strip()
            for i, (flag, value) in enumerate(self.fields)
            if value is not None
        }

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "profile":  # only a form with a --profile field (train) has them
            return any(flag == "--profile" for flag, _ in self.fields)
        return True

    def action_profile(self, name: str) -> None:
        index = next(i for i, (flag, _) in enumerate(self.fields) if flag == "--profile")
        self.query_one(f"#f{index}", Input).value = name  # (its Changed message redoes the preview)

    def on_input_changed(self) -> None:
        if self.preview is not None and self.is_mounted:
            self.query_one("#preview", Static).update(self.preview.describe(self.values()))

    def on_input_submitted(self) -> None:
        self.action_launch()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_launch() if event.button.id == "launch" else self.dismiss(None)

    def action_launch(self) -> None:
        try:
            args = self.args()
        except ValueError as exc:
            self.query_one("#error", Static).update(f"[b]{exc}[/b]")
            return
        self.dismiss(args)

    def action_cancel(self) -> None:
        self.dismiss(None)
