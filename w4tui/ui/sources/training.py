"""The training pane's model: a train run's state, rebuilt from its events and then fed incrementally.

A run started before the TUI (or before a reconnect over SSH) shows its whole history because the
state is only ever a fold over events.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.names import EventKind, RunStatus

MEMORY_KEYS = ("mem_allocated", "mem_driver", "mem_peak", "mem_recommended_max", "mem_reserved", "mem_total")


@dataclass
class TrainingState:
    run_id: str = ""
    stage: str = "train"
    started: float | None = None
    last_time: float | None = None
    phase: str = ""  # the newest progress / log message: "tokenizing", "resuming from ..."
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    eta_s: float | None = None
    eta_at: float | None = None  # when eta_s was reported, so the pane can count down between events
    device: str | None = None
    memory: dict[str, int] = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    memory_history: list[float] = field(default_factory=list)  # mem_allocated (or reserved) per report
    last_checkpoint: str | None = None
    last_checkpoint_step: int | None = None
    last_checkpoint_time: float | None = None
    adapter: str | None = None
    final: str | None = None  # "succeeded", "cancelled" or "failed" once a final event arrived
    error: str | None = None
    hint: str | None = None
    events: int = 0
    version: int = 0  # bumps on every change: widgets compare it instead of the data

    def apply(self, events: list[dict]) -> bool:
        """Fold new events in; True when anything changed."""
        for event in events:
            self._apply(event)
        if events:
            self.events += len(events)
            self.version += 1
        return bool(events)

    def _apply(self, e: dict) -> None:
        kind = e.get("kind")
        t = e.get("time")
        if isinstance(t, (int, float)):
            self.started = self.started if self.started is not None else t
            self.last_time = t
        self.run_id = self.run_id or str(e.get("run", ""))
        if kind == EventKind.METRICS:
            self._metrics(e, t)
        elif kind == EventKind.PROGRESS:
            if e.get("message"):
                self.phase = str(e["message"])
            elif e.get("unit") == "steps":
                self.phase = "training"
            elif e.get("unit"):
                self.phase = f"{e['unit']} {e.get('done')}/{e.get('total')}"
        elif kind == EventKind.LOG:
            self.phase = str(e.get("message", ""))
        elif kind == EventKind.START:
            self.phase = "starting"
        elif kind == EventKind.ARTIFACT:
            if e.get("type") == "checkpoint":
                self.last_checkpoint, self.last_checkpoint_step = e.get("path"), e.get("step")
                self.last_checkpoint_time = t
            elif e.get("type") == "adapter":
                self.adapter = e.get("path")
        elif kind == EventKind.DONE:
            self.final = str(e.get("status", RunStatus.SUCCEEDED))
            self.phase = self.final
            self.eta_s = 0.0 if self.final == RunStatus.SUCCEEDED else self.eta_s
        elif kind == EventKind.ERROR:
            self.final, self.error, self.hint = RunStatus.FAILED, str(e.get("message", "")), e.get("hint")
            self.phase = RunStatus.FAILED

    def _metrics(self, e: dict, t: float | None) -> None:
        step = e.get("step")
        if isinstance(step, int):
            self.step = step
        if isinstance(e.get("total_steps"), int):
            self.total_steps = e["total_steps"]
        for key in ("epoch", "learning_rate", "grad_norm", "tokens_per_second", "device"):
            if e.get(key) is not None:
                setattr(self, key, e[key])
        if isinstance(e.get("loss"), (int, float)):
            self.loss = float(e["loss"])
            self.losses.append((self.step, self.loss))
            self.phase = "training"
        if isinstance(e.get("eval_loss"), (int, float)):
            self.eval_loss = float(e["eval_loss"])
            self.eval_losses.append((self.step, self.eval_loss))
        if isinstance(e.get("eta_s"), (int, float)):
            self.eta_s, self.eta_at = float(e["eta_s"]), t
        memory = {k: int(e[k]) for k in MEMORY_KEYS if isinstance(e.get(k), (int, float))}
        if memory:
            self.memory = memory
            used = memory.get("mem_allocated", memory.get("mem_reserved"))
            if used is not None:
                self.memory_history.append(float(used))
                del self.memory_history[:-600]

    @property
    def fraction(self) -> float | None:
        if self.total_steps:
            return min(1.0, self.step / self.total_steps)
        return None

    def eta_now(self, now: float) -> float | None:
        """The reported ETA, counted down since it was reported (a report per step may be minutes apart)."""
        if self.eta_s is None:
            return None
        if self.final or self.eta_at is None:
            return self.eta_s if not self.final else None
        return max(0.0, self.eta_s - max(0.0, now - self.eta_at))
