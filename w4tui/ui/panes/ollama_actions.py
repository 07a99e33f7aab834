"""The Ollama pane's actions on the selected model, each in a worker (Ollama answers take time, and the
dialogs are awaited): test prompt, Modelfile, copy/tag, delete, roll back, promote a verified build."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textual import work
from textual.message import Message

from core.ollama import client as oc
from core.ollama import promote as op
from w4tui.ui.widgets.dialogs import ConfirmScreen, TextInputScreen, TextViewScreen


class OllamaActions:
    """Mixed into OllamaPane: it provides snapshot, selected, verified() and aliases_of()."""

    @dataclass
    class TestRequested(Message):
        """Open the test-prompt screen on ``model`` (the screen layer opens screens, not the panes)."""

        model: str

    @dataclass
    class ChatRequested(Message):
        """Open a chat with ``model``."""

        model: str

    def _need_model(self) -> str | None:
        if self.snapshot is None or self.snapshot.error:
            self.notify("Ollama is not reachable; see the pane for how to start it", severity="warning")
            return None
        if self.selected is None:
            self.notify("no model selected", severity="warning")
        return self.selected

    def action_refresh(self) -> None:
        self.refresh_models()

    def action_test(self) -> None:
        model = self._need_model()
        if model:
            self.post_message(self.TestRequested(model))

    def action_chat(self) -> None:
        model = self._need_model()
        if model:
            self.post_message(self.ChatRequested(model))

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_modelfile(self) -> None:
        model = self._need_model()
        if model:
            info = await self._call("show", model)
            if info is not None:
                await self.app.push_screen_wait(
                    TextViewScreen(f"Modelfile of {model}", info.get("modelfile") or "(empty)")
                )

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_copy(self) -> None:
        model = self._need_model()
        if model:
            target = await self.app.push_screen_wait(
                TextInputScreen(
                    f"Copy {model} to", model.split(":")[0] + ":", hint="a new name or tag; an existing one is replaced"
                )
            )
            if target and await self._call("copy", model, target) is not False:
                self.notify(f"copied {model} to {target}")
                self.refresh_models()

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_delete(self) -> None:
        model = self._need_model()
        if model:
            if await self.app.push_screen_wait(
                ConfirmScreen(f"Delete {model} from Ollama?", "Its blobs stay while another tag uses them.", "Delete")
            ):
                if await self._call("delete", model) is not False:
                    self.notify(f"deleted {model}")
                    self.refresh_models()

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_rollback(self) -> None:
        if self.snapshot is None or self.snapshot.error:
            self.notify("Ollama is not reachable; see the pane for how to start it", severity="warning")
            return
        name = self.app.config.ollama.model
        if f"{name}:previous" not in {m["model"] for m in self.snapshot.models}:
            self.notify(
                f"no {name}:previous to roll back to: it appears when a second verified build is promoted",
                severity="warning",
                timeout=8,
            )
            return
        if await self.app.push_screen_wait(
            ConfirmScreen(
                f"Roll {name}:latest back to {name}:previous?",
                "The current latest stays available under its build tag.",
                "Roll back",
            )
        ):
            result = await self._call("rollback", module=op)
            if result:
                self.notify(result)
                self.refresh_models()

    @work(exclusive=True, group="ollama-action", exit_on_error=False)
    async def action_promote(self) -> None:
        model = self._need_model()
        if not model:
            return
        name = self.app.config.ollama.model
        if model.rpartition(":")[0] != name or model.rpartition(":")[2] in op.POINTERS:
            self.notify(f"promote takes a build of {name} (a {name}:build-… row)", severity="warning")
            return
        if self.verified(model) is not True:
            what = "failed verification" if self.verified(model) is False else "is not verified"
            self.notify(
                f"{model} {what}: only a verified build is served (verify it: v in Artifacts)",
                severity="warning",
                timeout=8,
            )
            return
        if "latest" in self.aliases_of(model):
            self.notify(f"{name}:latest already is {model}")
            return
        now = next((m for m in self.snapshot.models if m["model"] == f"{name}:latest"), None)
        current = next(
            (
                m["model"]
                for m in self.snapshot.models
                if now and m.get("digest") == now.get("digest") and m["model"].rpartition(":")[2] not in op.POINTERS
            ),
            "none",
        )
        if await self.app.push_screen_wait(
            ConfirmScreen(
                f"Serve {model} as {name}:latest?",
                f"latest is now {current}; it is kept as {name}:previous (b rolls back to it).",
                "Promote",
            )
        ):
            result = await self._call("promote", model, module=op)
            if result:
                self.notify(result)
                self.refresh_models()

    async def _call(self, name: str, *args, module=oc):
        """Run a function of core/ollama's client (or promote) in a thread; an OllamaError becomes a
        notification (and False). By name, so a test's stand-in for it is the one called."""
        try:
            result = await asyncio.to_thread(getattr(module, name), self.app.config, *args)
        except oc.OllamaError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return False
        return True if result is None else result
