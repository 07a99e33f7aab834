"""The base of every pane, and the mailbox that lets thread workers hand results to the UI.

Workers never touch widgets: they ``deliver(topic, value)``, which keeps only the newest value per
topic and posts a ``Mailbox.Changed`` message whose ``can_replace`` lets a burst of them collapse
into one update; the handler calls ``show_<topic>(value)`` on the UI thread.

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

_NOTHING = object()


class Mailbox:
    class Changed(Message):
        """A worker has put something new in the mailbox."""

        def __init__(self, owner: object, topic: str) -> None:
            super().__init__()
            self.owner, self.topic = owner, topic

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, Mailbox.Changed) and message.owner is self.owner and message.topic == self.topic

    def deliver(self, topic: str, value: Any) -> None:
        """From a worker thread: keep only the newest ``value`` per topic and wake the owner."""
        with self._mail_lock:
            self._mail[topic] = value
        message = Mailbox.Changed(self, topic)
        if not defer(lambda: self.post_message(message)):  # type: ignore[attr-defined]
            self.post_message(message)  # type: ignore[attr-defined]

    @property
    def _mail_lock(self) -> threading.Lock:
        lock = self.__dict__.get("_mailbox_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_mailbox_lock", threading.Lock())
        return lock

    @property
    def _mail(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_mailbox", {})

    def run_loop(
        self, name: str, work: Callable[[], None], interval: float | Callable[[], float], shared: bool = True
    ) -> None:
        """Call ``work`` in a thread now and then every ``interval`` seconds, or at once when ``poke(name)``
        is called, until the widget goes away. ``shared``: on the app's ticker thread with the other quick
        jobs; else on a thread of its own, for work that may block (HTTP). Never the executor's threads:
        such loops would hold asyncio's whole default pool, starving the one-off workers."""
        every = interval if callable(interval) else (lambda: interval)
        if shared:
            ticker = self.app.__dict__.setdefault("_w4tui_ticker", Ticker())  # type: ignore[attr-defined]
            self.__dict__.setdefault("_loops", {})[name] = ticker
            ticker.add((id(self), name), work, every)
            return
        wake = threading.Event()
        self.__dict__.setdefault("_loops", {})[name] = wake

        def loop() -> None:
            while not self.__dict__.get("_loops_stopped"):
                try:
                    work()
                except Exception:  # a failed round is logged; the next one may succeed
                    if not self.__dict__.get("_loops_stopped"):  # (at exit the app may be gone already)
                        log.exception("%s: %s failed", type(self).__name__, name)
                wake.wait(every() - time.monotonic() % every())
                wake.clear()

        threading.Thread(target=loop, name=f"w4tui-{name}", daemon=True).start()

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

    def on_mailbox_changed(self, message: Mailbox.Changed) -> None:
        if message.owner is not self:
            return
        message.stop()
        with self._mail_lock:
            value = self._mail.pop(message.topic, _NOTHING)
        if value is not _NOTHING:
            getattr(self, f"show_{message.topic}")(value)


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
