"""A multi-turn chat with an Ollama model: the history as Markdown, an editable system prompt, the
answer streaming in. Each turn sends the whole conversation to ``/api/chat``, as oterm does."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Markdown, Static
from textual.worker import get_current_worker

from core.ollama import client as oc
from w4tui.ui.screens.prompt import rate
from w4tui.ui.widgets.dialogs import Dialog


class ChatScreen(Dialog[None]):
    DEFAULT_CSS = """
    ChatScreen .dialog { height: 95%; max-width: 130; }
    ChatScreen .row { height: 1; margin-bottom: 1; }
    ChatScreen .row Label { width: 8; }
    ChatScreen .row Input { width: 1fr; }
    ChatScreen #history { height: 1fr; border: round $foreground 25%; }
    ChatScreen #history .user { color: $primary; text-style: bold; margin-top: 1; }
    ChatScreen #history Markdown { margin: 0; padding: 0; }
    ChatScreen #stats { color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close", id="chat.close"),
        Binding("ctrl+l", "clear", "New chat", id="chat.clear", tooltip="Forget the conversation and start again"),
    ]

    def __init__(self, config, model: str, system: str = "") -> None:
        super().__init__()
        self.config, self.model, self.system = config, model, system
        self.messages: list[dict] = []  # the conversation so far (user and assistant turns)
        self.stats = ""
        self.busy = False  # an answer is streaming: the next message waits for it

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Chat with {self.model}", classes="title")
            with Horizontal(classes="row"):
                yield Label("system")
                yield Input(self.system, id="system", compact=True, placeholder="the model's own SYSTEM")
            yield VerticalScroll(id="history")
            with Horizontal(classes="row"):
                yield Label("you")
                yield Input(id="say", compact=True, placeholder="a message; enter sends")
            yield Static("enter sends · ctrl+l starts a new chat · escape closes", id="stats")

    def on_mount(self) -> None:
        self.query_one("#say", Input).focus()

    @on(Input.Submitted, "#say")
    def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.busy:
            return
        self.busy = True
        event.input.value = ""
        self.messages.append({"role": "user", "content": text})
        history = self.query_one("#history", VerticalScroll)
        history.mount(Static(f"you: {text}", classes="user", markup=False))
        answer = Markdown("")
        history.mount(answer)
        system = self.query_one("#system", Input).value.strip()
        sent = ([{"role": "system", "content": system}] if system else []) + list(self.messages)
        self._stream(sent, answer)

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False, description="stream a chat answer")
    def _stream(self, messages: list[dict], answer: Markdown) -> None:
        worker = get_current_worker()
        started, chunks, text, part = time.monotonic(), 0, "", {}
        self._post(answer, text, "waiting for the model to load…")
        try:
            stream = oc.chat_stream(self.config, self.model, messages, {"num_predict": self.config.verify.num_predict})
            for part in stream:
                if worker.is_cancelled:
                    stream.close()
                    return
                text += (part.get("message") or {}).get("content", "")
                chunks += 1
                if chunks % 8 == 0:
                    self._post(answer, text, "streaming · " + rate({}, chunks, time.monotonic() - started))
            if part.get("done"):
                done = f"done ({part.get('done_reason', 'stop')}) · " + rate(part, chunks, time.monotonic() - started)
            else:  # llm/llama_server.go ends the stream with no done part after >30 repeated tokens
                done = "cut off: the stream ended without Ollama's final part (a degenerate repetition)"
        except oc.OllamaError as exc:
            done = f"error: {exc}"
        self.app.call_from_thread(self._answered, answer, text, "" if worker.is_cancelled else done)

    def _post(self, answer: Markdown, text: str, stats: str) -> None:
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, answer, text, stats)

    def _show(self, answer: Markdown, text: str, stats: str) -> None:
        self.stats = stats
        answer.update(text)
        self.query_one("#stats", Static).update(stats)
        self.query_one("#history", VerticalScroll).scroll_end(animate=False)

    def _answered(self, answer: Markdown, text: str, stats: str) -> None:
        self.busy = False
        if not stats:  # cancelled (a new chat, or closing)
            return
        if text:  # the answer joins the conversation the next turn sends
            self.messages.append({"role": "assistant", "content": text})
        self._show(answer, text, stats)

    def action_clear(self) -> None:
        self.workers.cancel_group(self, "chat")
        self.messages.clear()
        self.query_one("#history", VerticalScroll).remove_children()
        self.query_one("#stats", Static).update("a new chat")

    def action_close(self) -> None:
        self.workers.cancel_group(self, "chat")
        self.dismiss(None)
