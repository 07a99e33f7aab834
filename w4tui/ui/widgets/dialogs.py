"""Small modal dialogs: confirm, ask for a line of text, show a long text. Building blocks (the screens
layer's full screens and the panes' questions use them), so they live with the widgets."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, ScreenResultType
from textual.widgets import Button, Input, Label, Static


class Dialog(ModalScreen[ScreenResultType]):
    """The base of every modal of the app: centred, a framed ``.dialog`` box with a title, hints and
    right-aligned buttons. Subclasses add their own DEFAULT_CSS; Textual applies this one to them too
    (type selectors match subclasses)."""

    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog .dialog {
        width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    Dialog .dialog .title { text-style: bold; color: $primary; margin-bottom: 1; }
    Dialog .dialog .buttons { height: auto; align-horizontal: right; margin-top: 1; }
    Dialog .dialog .buttons Button { margin-left: 1; min-width: 10; }
    Dialog .dialog .hint { color: $text-muted; }
    """


class ConfirmScreen(Dialog[bool]):
    """Asks a yes/no question; y / enter confirm, n / escape decline."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="dialog.yes"),
        Binding("n,escape", "answer(False)", "No", id="dialog.no"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.detail, self.yes = question, detail, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="title")
            if self.detail:
                yield Static(self.detail, classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("No", id="no", compact=True)
                yield Button(self.yes, id="yes", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class TextInputScreen(Dialog[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", hint: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.hint = title, value, hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            # The cursor after the text: a prefilled "model:" is to be typed after, not replaced.
            yield Input(self.value, id="value", compact=True, select_on_focus=False)
            if self.hint:
                yield Static(self.hint, classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextViewScreen(Dialog[None]):
    """A scrollable text (an artifact's details, a Modelfile); escape or q closes it."""

    DEFAULT_CSS = """
    TextViewScreen .dialog { height: 90%; }
    TextViewScreen VerticalScroll { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q", "close", "Close", id="dialog.close")]

    def __init__(self, title: str, text) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            with VerticalScroll():
                yield Static(self.text, id="text", markup=False)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
