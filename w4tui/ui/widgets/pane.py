"""The base of every pane, and the mailbox that lets thread workers hand results to the UI.

Workers never touch widgets: they ``deliver(topic, value)``, which keeps only the newest value per
topic and posts a ``Mailbox.Changed`` message whose ``can_replace`` lets a burst of them collapse
into one update; the handler calls ``show_<topic>(value)`` on the UI thread.
"""

from __future__ import annotations

import threading
from typing import Any

from textual.containers import Vertical
from textual.message import Message

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
        self.post_message(Mailbox.Changed(self, topic))  # type: ignore[attr-defined]

    @property
    def _mail_lock(self) -> threading.Lock:
        lock = self.__dict__.get("_mailbox_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_mailbox_lock", threading.Lock())
        return lock

    @property
    def _mail(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_mailbox", {})

    def on_mailbox_changed(self, message: "Mailbox.Changed") -> None:
        if message.owner is not self:
            return
        message.stop()
        with self._mail_lock:
            value = self._mail.pop(message.topic, _NOTHING)
        if value is not _NOTHING:
            getattr(self, f"show_{message.topic}")(value)


class Pane(Mailbox, Vertical, can_focus=False):
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

    def focus_main(self) -> None:
        """Focus the pane's main widget (its first focusable one), else the pane itself."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
        if self.can_focus:
            self.focus()
