"""Try a prompt on an Ollama model: the answer streams in, with tokens per second."""

from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from core.ollama import client as oc
from w4tui.ui.widgets.dialogs import Dialog


def rate(part: dict, chunks: int, elapsed: float) -> str:
    """Tokens/s from the final part's counters (Ollama's own timing), else an estimate from chunks."""
    count, ns = part.get("eval_count"), part.get("eval_duration")
    if count and ns:
        return f"{count} tokens · {count / (ns / 1e9):.1f} tok/s"
    return f"{chunks} tokens · ~{chunks / elapsed:.1f} tok/s" if elapsed > 0 else f"{chunks} tokens"


class PromptScreen(Dialog[None]):
    DEFAULT_CSS = """
    PromptScreen .dialog { height: 90%; max-width: 120; }
    PromptScreen VerticalScroll { height: 1fr; border: round $foreground 25%; }
    PromptScreen #stats { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "close", "Close", id="prompt.close")]

    def __init__(self, config, model: str, prompt: str) -> None:
        super().__init__()
        self.config, self.model, self.prompt = config, model, prompt
        self.answer = ""
        self.stats = ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Test {self.model}", classes="title")
            yield Input(self.prompt, id="prompt", compact=True)
            with VerticalScroll():
                yield Static("", id="answer", markup=False)
            yield Static("enter sends the prompt; escape closes (and stops the answer)", id="stats")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.answer = ""
            self.query_one("#answer", Static).update("")
            self._stream(event.value)

    @work(thread=True, exclusive=True, group="prompt", exit_on_error=False, description="stream an answer")
    def _stream(self, prompt: str) -> None:
        worker = get_current_worker()
        started, chunks, text, part = time.monotonic(), 0, "", {}
        self.app.call_from_thread(self._show, "", "waiting for the model to load…")
        try:
            stream = oc.generate_stream(
                self.config, self.model, prompt, options={"num_predict": self.config.verify.num_predict}
            )
            for part in stream:
                if worker.is_cancelled:
                    stream.close()
                    return
                text += part.get("response", "")
                chunks += 1
                if chunks % 4 == 0 or part.get("done"):
                    self._post(text, "streaming · " + rate({}, chunks, time.monotonic() - started))
            if part.get("done"):
                done = f"done ({part.get('done_reason', 'stop')}) · " + rate(part, chunks, time.monotonic() - started)
            else:  # llm/llama_server.go ends the stream with no done part after >30 repeated tokens
                done = "cut off: the stream ended without Ollama's final part (a degenerate repetition)"
            self._post(text, done)
        except oc.OllamaError as exc:
            self._post(text, f"error: {exc}")

    def _post(self, text: str, stats: str) -> None:
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, text, stats)

    def _show(self, text: str, stats: str) -> None:
        self.answer, self.stats = text, stats
        self.query_one("#answer", Static).update(text)
        self.query_one("#stats", Static).update(stats)
        self.query_one(VerticalScroll).scroll_end(animate=False)

    def action_close(self) -> None:
        self.workers.cancel_group(self, "prompt")
        self.dismiss(None)
