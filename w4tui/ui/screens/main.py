"""The main screen: six panes, shown one at a time on a small terminal and several at once on a big
one. It polls the runs directory and hands each pane what it shows (attributes down, messages up)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.content import Content
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from core.names import RunStatus
from w4tui.monitors.notify import EndWatch
from w4tui.nightly.holder import ScheduleHolder
from w4tui.runs.runner import RunError
from w4tui.ui.panes.artifacts import ArtifactsPane
from w4tui.ui.panes.logs import LogsPane
from w4tui.ui.panes.memory import MemoryPane
from w4tui.ui.panes.ollama import OllamaPane
from w4tui.ui.panes.schedule import SchedulePane
from w4tui.ui.panes.stages import StagesPane
from w4tui.ui.panes.training import TrainingPane
from w4tui.ui.screens import launch as L
from w4tui.ui.screens.chat import ChatScreen
from w4tui.ui.screens.inspect import describe_artifact
from w4tui.ui.screens.prompt import PromptScreen
from w4tui.ui.screens.stage_form import StageFormScreen
from w4tui.ui.sources.artifacts import delete, on_disk
from w4tui.ui.sources.compare import build_facts, compare_text
from w4tui.ui.sources.runs import RunInfo, RunsWatcher
from w4tui.ui.widgets.dialogs import ConfirmScreen, TextViewScreen
from w4tui.ui.widgets.pane import Delivered, Mailbox, Pane

POLL_S = 1.0
LATER_S = 0.4  # panes not on the first screen are mounted this long after it
FIRST_POLL_S = 0.08
WIDE = (120, 34)  # from this size on, several panes share the screen
ALWAYS_WIDE = ("training", "memory", "stages")
PANES = ("training", "memory", "artifacts", "ollama", "stages", "logs", "schedule")


class PaneBar(Static):
    """The pane names with their keys (click one to show it), and what is running."""

    DEFAULT_CSS = """
    PaneBar { height: 1; background: $panel; padding: 0 1; link-style: none; link-background-hover: $boost; }
    """

    def show(self, screen: MainScreen) -> None:
        parts = []
        live = [r for r in screen.runs if r.live]
        status = (
            f"[bold $accent]▶ {escape(', '.join(r.stage for r in live))} running[/]" if live else "[$text-muted]idle[/]"
        )
        width = self.app.size.width
        titles = {p.PANE_ID: p.TITLE if width >= 100 else p.SHORT for p in screen.panes()}
        status_len = len(", ".join(r.stage for r in live)) + 10 if live else 4
        if sum(len(t) + 4 for t in titles.values()) + 3 + status_len > width:
            # Too narrow for every name and the status: the other panes by key only, the status stays.
            titles = {k: (t if k == screen.active else "") for k, t in titles.items()}
        for pane in screen.panes():
            style = (
                "bold reverse $primary"
                if pane.PANE_ID == screen.active
                else ("bold" if pane.display else "$text-muted")
            )
            title = f" {titles[pane.PANE_ID]}" if titles[pane.PANE_ID] else ""
            parts.append(f"[{style} @click=screen.show_pane('{pane.PANE_ID}')] {pane.KEY}{title} [/]")
        self.update(Content.from_markup("".join(parts) + " " + status))


class ReadyFooter(Footer):
    """A Footer that draws its keys in the first frame, and recomposes only when they change. Textual's
    waits for the first bindings update and composes one frame later (~70 ms), then again on each
    focus change even when the keys are the same."""

    def __init__(self) -> None:
        super().__init__()
        self._bindings_ready = True  # (a private flag of Footer: without it, it behaves as Footer)
        self._shown: tuple | None = None

    def _keys(self) -> tuple:
        return tuple(
            (key, b.key, b.description, b.show, enabled)
            for key, (_, b, enabled, _tooltip) in self.screen.active_bindings.items()
        )

    def compose(self):
        self._shown = self._keys()
        yield from super().compose()

    def bindings_changed(self, screen) -> None:
        if screen is self.screen and self._shown is not None and self._keys() == self._shown:
            return
        super().bindings_changed(screen)


class MainScreen(Mailbox, Screen):
    DEFAULT_CSS = """
    MainScreen #panes { height: 1fr; }
    MainScreen.-wide #panes {
        layout: grid; grid-size: 3 2; grid-rows: 11fr 9fr; grid-columns: 1fr 1fr 1fr;
    }
    MainScreen.-wide #training { column-span: 2; }
    MainScreen.-wide #artifacts, MainScreen.-wide #ollama, MainScreen.-wide #logs { column-span: 2; }
    MainScreen.-wide #schedule { column-span: 2; }
    """
    BINDINGS = [
        *[
            Binding(str(i + 1), f"show_pane('{name}')", name.title(), id=f"pane.{name}", show=False)
            for i, name in enumerate(PANES)
        ],
        Binding("question_mark", "app.help", "Help", id="app.help", tooltip="Every key and what it does"),
        Binding(
            "z", "toggle_zoom", "Zoom", id="app.zoom", show=False, tooltip="Show the pane full screen; again: back"
        ),
    ]
    ALLOW_IN_MAXIMIZED_VIEW = "PaneBar, Footer"  # a zoomed pane keeps the pane bar: 1-7 switch panes
    active: reactive[str] = reactive("training", init=False)  # the pane keys and focus go to; the bar shows it

    def __init__(self, sampler=None, scanner=None, schedule: ScheduleHolder | None = None) -> None:
        super().__init__()
        self.sampler, self.scanner, self.schedule = sampler, scanner, schedule
        self.secondary = "logs"  # the pane sharing the lower right on a wide screen
        self.runs: tuple[RunInfo, ...] = ()
        self.watcher = RunsWatcher(self.app.runner)

    def compose(self) -> ComposeResult:
        self._panes: dict[str, Pane] = {
            p.PANE_ID: p
            for p in (
                TrainingPane(),
                MemoryPane(self.sampler),
                ArtifactsPane(self.scanner),
                OllamaPane(),
                StagesPane(),
                LogsPane(),
                SchedulePane(self.schedule),
            )
        }
        first = self._shown(self._is_wide(self.app.size))
        yield PaneBar(id="pane-bar")
        with Container(id="panes"):
            # Panes off screen at start are mounted once the first frame (footer included) is out.
            yield from (pane for pane_id, pane in self._panes.items() if pane_id in first)
        yield ReadyFooter()

    def mount_rest(self) -> None:
        """Mount the panes that were left out of the first frame, each in its place."""
        container = self.query_one("#panes")
        panes = self.panes()
        for index, pane in enumerate(panes):
            if pane.is_attached:
                continue
            after = next((p for p in panes[index + 1 :] if p.is_attached), None)
            container.mount(pane, before=after) if after is not None else container.mount(pane)

    def panes(self) -> list[Pane]:
        return list(self._panes.values())

    def pane(self, pane_id: str) -> Pane:
        return self._panes[pane_id]

    def on_mount(self) -> None:
        self.on_resize()
        # Data after the first frame and its footer: the layout is up at once, the runs follow.
        self.set_timer(FIRST_POLL_S, lambda: self.run_loop("runs", self._poll_runs, POLL_S))
        self.set_timer(LATER_S, self.mount_rest)
        self.pane(self.active).focus_main()
        self.app.theme_changed_signal.subscribe(self, lambda _: self._restyle())

    def _restyle(self) -> None:
        for pane in self.panes():
            if pane.ready:
                pane.restyle()
        self.query_one(PaneBar).show(self)

    @staticmethod
    def _is_wide(size) -> bool:
        return size.width >= WIDE[0] and size.height >= WIDE[1]

    def _shown(self, wide: bool) -> set[str]:
        return {*ALWAYS_WIDE, self.secondary} if wide else {self.active}

    def on_resize(self, _=None) -> None:
        self.set_class(self._is_wide(self.size), "-wide")
        self._layout()

    def _layout(self) -> None:
        shown = self._shown(self.has_class("-wide"))
        for pane in self.panes():
            pane.display = pane.PANE_ID in shown
        self.query_one(PaneBar).show(self)

    # -- runs: polled here, handed down -----------------------------------------------------
    def poll_runs(self) -> None:
        """Look at the runs now (after starting or cancelling one), not at the next round."""
        self.poke("runs")

    def _poll_runs(self) -> None:  # in the "runs" loop's thread
        runs, changed = self.watcher.poll()
        if changed:
            self.deliver(self.Runs(runs))

    @dataclass
    class Runs(Delivered):
        """The runs, newest first (for every pane and the pane bar)."""

        runs: tuple[RunInfo, ...]

    @on(Runs)
    def _runs_delivered(self, message: Runs) -> None:
        self.show_runs(message.runs)

    def show_runs(self, runs: tuple[RunInfo, ...]) -> None:
        self.runs = runs
        self._announce_ends(runs)
        train = next((r for r in runs if r.stage == "train" and r.live), None) or next(
            (r for r in runs if r.stage == "train"), None
        )
        self.pane("training").follow(train)
        # memory: the live training's machine warnings; ollama: which builds verify passed
        for pane_id in ("stages", "logs", "artifacts", "memory", "ollama"):
            self.pane(pane_id).show_runs(runs)
        self.query_one(PaneBar).show(self)

    def _announce_ends(self, runs: tuple[RunInfo, ...]) -> None:
        """The terminal bell and a toast when a run this TUI saw running ends (issue 15; the supervisor
        sends the desktop and URL notifications, once, whether a TUI is open or not)."""
        for run in self.__dict__.setdefault("_run_ends", EndWatch()).ended(runs):
            self.app.bell()
            ok = run.status == RunStatus.SUCCEEDED
            self.notify(
                f"{run.stage} {run.status} ({run.id})", title="run ended", severity="information" if ok else "error"
            )

    @on(TrainingPane.Memory)
    def _memory(self, message: TrainingPane.Memory) -> None:
        self.pane("memory").show_accelerator(message.device, message.memory, message.history)

    # -- panes --------------------------------------------------------------------------------
    def action_show_pane(self, pane_id: str) -> None:
        self.active = pane_id
        if pane_id not in ALWAYS_WIDE:
            self.secondary = pane_id
        pane = self.pane(pane_id)
        if not pane.is_attached:
            self.mount_rest()
        self._layout()
        if self.maximized is not None:
            self.maximized = pane  # zoomed: the pane asked for is the one shown full screen
        if pane.is_mounted:
            pane.focus_main()
        else:
            self.call_after_refresh(pane.focus_main)

    def action_toggle_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
        else:
            self.maximize(self.pane(self.active), container=False)

    def maximize(self, widget, container: bool = True) -> bool:
        """Textual's "Maximize" (palette) takes the focused widget: here it is always its whole pane."""
        pane = next((a for a in widget.ancestors_with_self if isinstance(a, Pane)), None)
        return super().maximize(pane, container=False) if pane is not None else False

    def on_descendant_focus(self, event) -> None:
        pane = next((a for a in event.widget.ancestors_with_self if isinstance(a, Pane)), None)
        if pane is not None:
            self.active = pane.PANE_ID

    def watch_active(self) -> None:
        if self.is_mounted:
            self.query_one(PaneBar).show(self)

    # -- requests from the panes --------------------------------------------------------------
    @on(TrainingPane.ResumeRequested)
    def _resume_requested(self, message: TrainingPane.ResumeRequested) -> None:
        self.launch("train", resume=message.run)

    @on(StagesPane.StartRequested)
    def _start_requested(self, message: StagesPane.StartRequested) -> None:
        self.launch(message.stage)

    @on(StagesPane.CancelRequested)
    def _cancel_requested(self, message: StagesPane.CancelRequested) -> None:
        self.cancel(message.run, message.others)

    @on(SchedulePane.ShowLogs)
    def _show_night_logs(self, message: SchedulePane.ShowLogs) -> None:
        run = next((r for r in self.runs if r.id == message.run_id), None)
        if run is not None:
            self.action_show_pane("logs")
            self.pane("logs").select(run)

    @on(StagesPane.ShowLogs)
    def _show_logs(self, message: StagesPane.ShowLogs) -> None:
        self.action_show_pane("logs")
        self.pane("logs").select(message.run)

    @on(OllamaPane.TestRequested)
    def _test_prompt(self, message: OllamaPane.TestRequested) -> None:
        self.app.push_screen(PromptScreen(self.app.config, message.model, self.app.config.verify.prompts[0]))

    @on(OllamaPane.ChatRequested)
    def _chat(self, message: OllamaPane.ChatRequested) -> None:
        self.app.push_screen(ChatScreen(self.app.config, message.model))

    @on(ArtifactsPane.Deploy)
    def _deploy(self, message: ArtifactsPane.Deploy) -> None:
        self.launch("deploy", message.artifact.path)

    @on(ArtifactsPane.Verify)
    def _verify(self, message: ArtifactsPane.Verify) -> None:
        self.launch("verify", message.artifact.deployed[-1])

    @on(ArtifactsPane.Eval)
    def _eval(self, message: ArtifactsPane.Eval) -> None:
        self.launch("eval", message.artifact.path)

    @on(ArtifactsPane.Compare)
    def _compare(self, message: ArtifactsPane.Compare) -> None:
        self._compare_builds(message.marked, message.artifact, list(self.pane("artifacts").artifacts))

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _compare_builds(self, marked, selected, artifacts) -> None:
        """Two builds side by side (w4tui/ui/sources/compare.py); their files are read here, in a worker."""
        text = compare_text(build_facts(marked, artifacts), build_facts(selected, artifacts))
        title = f"compare {marked.name} | {selected.name}"
        self.app.call_from_thread(self.app.push_screen, TextViewScreen(title, text))

    @on(ArtifactsPane.Delete)
    def _delete(self, message: ArtifactsPane.Delete) -> None:
        self.delete_artifact(message.artifact)

    @on(ArtifactsPane.Inspect)
    def _inspect(self, message: ArtifactsPane.Inspect) -> None:
        a = message.artifact
        self.app.push_screen(TextViewScreen(f"{a.kind}: {a.name}", describe_artifact(a, self.app.clock())))

    @work(exclusive=True, group="launch", exit_on_error=False)
    async def launch(self, stage: str, input_path: str | None = None, resume: RunInfo | None = None) -> None:
        runner, config = self.app.runner, self.app.config
        if resume is not None:
            try:
                prepared = await asyncio.to_thread(L.prepare_resume, resume.dir, resume.id)
            except (LookupError, OSError, ValueError, KeyError) as exc:
                self.notify(str(exc), title="not resumable", severity="warning", timeout=8)
                return
        else:
            prepared = await asyncio.to_thread(L.prepare, runner, config, stage, input_path, self.app.clock())
        args = await self.app.push_screen_wait(
            StageFormScreen(
                prepared.title,
                prepared.args,
                prepared.note,
                prepared.blank,
                extra_hint="none needed" if stage == L.PIPELINE else prepared.example,
                dataset=prepared.dataset,
            )
        )
        if args is None:
            return
        try:
            run = await asyncio.to_thread(L.start, runner, config, stage, args)
        except RunError as exc:
            self.notify(str(exc), title=f"{stage} not started", severity="error", timeout=10)
            return
        self.notify(f"{stage} started: run {run.id}; it keeps running if you quit", timeout=5)
        self.poll_runs()

    @work(exclusive=True, group="cancel", exit_on_error=False)
    async def cancel(self, run: RunInfo, others: tuple[RunInfo, ...]) -> None:
        detail = "It gets SIGINT (it saves what it can), SIGTERM after the grace period, then SIGKILL."
        if others:
            detail += "\nAlso cancels: " + ", ".join(f"{r.stage} {r.id}" for r in others)
        if not await self.app.push_screen_wait(
            ConfirmScreen(f"Cancel {run.stage} run {run.id}?", detail, "Cancel run")
        ):
            return
        for target in (run, *others):
            try:
                await asyncio.to_thread(self.app.runner.cancel, target.id)
            except RunError as exc:
                self.notify(str(exc), severity="warning")
        self.notify(f"cancelling {run.stage} run {run.id}")
        self.poll_runs()

    @work(exclusive=True, group="delete", exit_on_error=False)
    async def delete_artifact(self, artifact) -> None:
        what = "incomplete adapter" if artifact.incomplete else artifact.kind
        freed = await asyncio.to_thread(on_disk, artifact)  # (all it removes: checkpoints included)
        if not await self.app.push_screen_wait(
            ConfirmScreen(
                f"Delete {what} {artifact.name}?", f"{artifact.path}\n{freed}; this cannot be undone.", "Delete"
            )
        ):
            return
        try:
            self.notify(await asyncio.to_thread(delete, artifact, self.runs))
        except OSError as exc:
            self.notify(f"not deleted: {exc}", severity="error", timeout=8)
        self.pane("artifacts").rescan()
