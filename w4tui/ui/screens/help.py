"""Help: every key, grouped by where it works, with the binding id to rebind it."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from w4tui.ui.widgets.dialogs import Dialog

INTRO = (
    "Panes: 1-7 show a pane (on a wide terminal several are shown at once), z shows it full screen; tab "
    "and shift+tab move between them; arrows and the mouse move inside one. Stages run as detached processes: quitting "
    "leaves them running and the next `w4tui` re-attaches. ctrl+p lists every action in the command "
    'palette. Rebind any key by its id in <state>/settings.toml, e.g. [keymap] "stages.start" = "g".\n'
)


def bindings_table(groups: list[tuple[str, list[Binding]]]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
    table.add_column("where")
    table.add_column("key")
    table.add_column("does")
    table.add_column("id", style="dim")
    for where, bindings in groups:
        for index, b in enumerate(bindings):
            table.add_row(
                where if index == 0 else "",
                Text(b.key.replace("question_mark", "?"), style="bold"),
                b.description or b.tooltip,
                b.id or "",
            )
    return table


class HelpScreen(Dialog[None]):
    DEFAULT_CSS = """
    HelpScreen .dialog { height: 90%; max-width: 110; }
    HelpScreen VerticalScroll { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, groups: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("w4tui keys", classes="title")
            with VerticalScroll():
                yield Static(INTRO, classes="hint", markup=False)
                yield Static(bindings_table(self.groups))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
