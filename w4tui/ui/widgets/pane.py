"""The base of every pane, and the mailbox that lets thread workers hand results to the UI.

Workers never touch widgets: they ``deliver(message)`` a typed ``Delivered`` message (each pane declares
its own, e.g. ``StagesPane.Detail``), handled by that pane alone on the UI thread; its ``can_replace``
lets a burst of the same kind collapse into one update, the newest.

Periodic I/O (polling runs, following a log, sampling the system) runs in long-lived threads that
sleep between rounds (``run_loop``; see ``ticker``), rather than a Textual worker per round: a worker
costs several messages through the DOM, which would be most of the TUI's idle CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from textual.containers import Vertical
from textual.message import Message

from w4tui.ui.widgets.ticker import Ticker, defer

log = logging.getLogger(__name__)


class Delivered(Message, bubble=False):
    """A worker's result for the widget whose worker made it. Each kind is a dataclass naming its fields
    (``StagesPane.Detail(stage, run, error, tail)``). A pending message of the same class for the same
    widget is superseded by a newer one: only the newest is shown."""

    owner: object = None  # the widget it is for, set by deliver() (not a field: the worker never names it)

    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self) and getattr(message, "owner", None) is self.owner


class Mailbox:
    class LoopFailed(Message, bubble=False):
        """A periodic job failed (``error`` set) or works again after failing (``error`` None)."""

        def __init__(self, name: str, error: str | None) -> None:
            super().__init__()
            self.name, self.error = name, error

    def deliver(self, message: Delivered) -> None:
        """From a worker thread: post ``message`` to this widget (with the ticker's round when on it)."""
        message.owner = self

        def post() -> None:
            self.post_message(message)  # type: ignore[attr-defined]

        if not defer(post):
            post()

    def run_loop(
        self, name: str, work: Callable[[], None], interval: float | Callable[[], float], shared: bool = True
    ) -> None:
        """Call ``work`` in a thread now and then every ``interval`` seconds, or at once when ``poke(name)``
        is called, until the widget goes away. ``shared``: on the app's ticker thread with the other quick
        jobs; else on a thread of its own, for work that may block (HTTP). Never the executor's threads:
        such loops would hold asyncio's whole default pool, starving the one-off workers."""
        every = interval if callable(interval) else (lambda: interval)
        failing = False

        def guarded() -> None:
            # A failed round is logged and told to the user once (the next rounds may succeed: then
            # that is told too), instead of failing silently into the log while the pane goes stale.
            nonlocal failing
            try:
                work()
            except Exception as exc:
                if self.__dict__.get("_loops_stopped"):  # (at exit the app may be gone already)
                    return
                log.exception("%s: %s failed", type(self).__name__, name)
                if not failing:
                    failing = True
                    self.post_message(self.LoopFailed(name, f"{exc.__class__.__name__}: {exc}"))  # type: ignore[attr-defined]
            else:
                if failing:
                    failing = False
                    self.post_message(self.LoopFailed(name, None))  # type: ignore[attr-defined]

        if shared:
            ticker = self.app.__dict__.setdefault("_w4tui_ticker", Ticker())  # type: ignore[attr-defined]
            self.__dict__.setdefault("_loops", {})[name] = ticker
            ticker.add((id(self), name), guarded, every)
            return
        wake = threading.Event()
        self.__dict__.setdefault("_loops", {})[name] = wake

        def loop() -> None:
            while not self.__dict__.get("_loops_stopped"):
                guarded()
                wake.wait(every() - time.monotonic() % every())
                wake.clear()

        threading.Thread(target=loop, name=f"w4tui-{name}", daemon=True).start()

    def on_mailbox_loop_failed(self, message: Mailbox.LoopFailed) -> None:
        where = getattr(self, "TITLE", "") or type(self).__name__
        if message.error:
            self.notify(  # type: ignore[attr-defined]
                f"{message.name} failed: {message.error} (retrying; details in the log)",
                title=where,
                severity="error",
            )
        else:
            self.notify(f"{message.name} works again", title=where)  # type: ignore[attr-defined]

    def poke(self, name: str) -> None:
        """Run loop ``name``'s next round now."""
        loop = self.__dict__.get("_loops", {}).get(name)
        if isinstance(loop, Ticker):
            loop.poke((id(self), name))
        elif loop is not None:
            loop.set()

    def on_unmount(self) -> None:
        self.__dict__["_loops_stopped"] = True
        for name, loop in self.__dict__.get("_loops", {}).items():
            if isinstance(loop, Ticker):
                loop.remove((id(self), name))
            else:
                loop.set()  # wake the loop so it ends now, not an interval later


class Pane(Mailbox, Vertical, can_focus=False):
    ALLOW_MAXIMIZE = True  # "Maximize" and the zoom key show a whole pane, never one table of it
    PANE_ID = ""
    TITLE = ""
    SHORT = ""  # for the pane bar of a narrow terminal
    KEY = ""

    DEFAULT_CSS = """
    Pane {
        border: round $foreground 25%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        height: 1fr;
    }
    Pane:focus-within, Pane:focus { border: round $primary; border-title-color: $primary; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(id=self.PANE_ID, **kwargs)
        self.border_title = f"{self.KEY} {self.TITLE}" if self.KEY else self.TITLE

    def set_subtitle(self, text: str) -> None:
        """Set the border subtitle only when it changes: setting it repaints the whole pane."""
        if text != self.__dict__.get("_subtitle"):
            self.__dict__["_subtitle"] = text
            self.border_subtitle = text

    def restyle(self) -> None:
        """Redraw what holds colours resolved from the theme (Rich text in Statics and tables)."""

    @property
    def ready(self) -> bool:
        """Its children are mounted: true already in on_mount (is_mounted becomes true only after it)."""
        return self.__dict__.get("_ready", False)

    async def mount_composed_widgets(self, widgets: list) -> None:
        await super().mount_composed_widgets(widgets)
        self.__dict__["_ready"] = True

    def focus_main(self) -> None:
        """Focus the pane's main widget (its first focusable one), else the pane itself."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
        if self.can_focus:
            self.focus()
