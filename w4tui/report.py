"""What `w4tui status` and `w4tui config` print: plain text for a person in a shell (the TUI shows the
same things in its panes). Standard library only, no Ollama call: status must answer at once."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from core import specs
from core.config import Config, default_config_path
from core.names import EventKind, RunStatus
from core.units import duration
from w4tui.runs.runner import Run


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    same_day = time.localtime(t)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(t))


def _short_path(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


def _last_metrics(events: list[dict]) -> dict:
    """The newest training figures: loss from the newest report that has one, step from the newest."""
    out: dict = {}
    for e in events:
        if e.get("kind") == EventKind.METRICS:
            out.update(
                {k: e[k] for k in ("step", "total_steps", "loss", "eta_s", "tokens_per_second") if e.get(k) is not None}
            )
    return out


def result(run: Run, events: list[dict], base: Path) -> str:
    """One line on what a run made: the last loss of a training, the build tag of a deploy, a verdict."""
    parts = []
    if run.stage == "train":
        m = _last_metrics(events)
        if "loss" in m:
            parts.append(f"loss {m['loss']:.4f}")
        if "step" in m:
            parts.append(f"step {m['step']}/{m.get('total_steps', '?')}")
    done = next((e for e in reversed(events) if e.get("kind") == EventKind.DONE), None)
    if run.stage == "train" and done and done.get("backend"):  # which trainer, on what base precision
        parts.append(f"{done['backend']} {done.get('base_precision', '')}".strip())
    if run.stage == "nightly" and done and done.get("outcome"):  # a night makes no artifact of its own
        build, reason = done.get("build"), done.get("reason")
        parts.append(str(done["outcome"]) + (f" {build}" if build else "") + (f": {reason}" if reason else ""))
    start = next((e for e in events if e.get("kind") == EventKind.START), None)
    if run.stage == "pipeline" and start and start.get("stages"):
        parts.append(" > ".join(map(str, start["stages"])))
    for a in run.artifacts(events):
        if a.get("type") == "verified":
            parts.append(
                f"{a.get('path')} "
                + ("passed" if a.get("passed") else "FAILED")
                + (", promoted to latest" if a.get("promoted") else "")
            )
        elif a.get("type") == "ollama":
            parts.append(str(a.get("path")))
        elif a.get("type") == specs.BY_NAME.get(run.stage, specs.STAGES[0]).produces:
            parts.append(_short_path(str(a.get("path")), base))
    error = next((e for e in reversed(events) if e.get("kind") == EventKind.ERROR), None)
    if error and run.status in (RunStatus.FAILED, RunStatus.CRASHED):
        parts.append(f"error: {error.get('message', '')}")
    return " · ".join(parts)


def status_lines(runs: list[Run], config: Config, now: float) -> Iterator[str]:
    yield f"config: {config.file}"
    live = [r for r in runs if r.live]
    for run in live:
        m = _last_metrics(run.events())
        where = f" step {m['step']}/{m.get('total_steps', '?')}" if "step" in m else ""
        where += f" loss {m['loss']:.4f}" if "loss" in m else ""
        where += f" {m['tokens_per_second']:,.0f} tok/s" if "tokens_per_second" in m else ""
        where += f" ETA {duration(m['eta_s'])}" if "eta_s" in m else ""
        where += f" on {m['device']}" if "device" in m else ""
        yield f"running: {run.stage} {run.id} (pid {run.pid}, since {_when(run.started, now)}){where}"
    if not live:
        yield "nothing running"
    rows = [(name, next((r for r in runs if r.stage == name), None)) for name in specs.NAMES]
    if not any(run for _, run in rows):
        yield f"no runs yet in {config.paths.runs}"
        return
    yield f"  {'stage':<9} {'status':<10} {'ended':<16} {'took':>6}  result"
    for name, run in rows:
        if run is None:
            yield f"  {name:<9} {'never run':<10}"
            continue
        ended = _when(run.ended, now) if run.ended else ("-" if not run.live else "running")
        took = duration((run.ended or now) - run.started)
        yield f"  {name:<9} {run.status:<10} {ended:<16} {took:>6}  {result(run, run.events(), config.base_dir)}"
    promoted = next(
        (
            a
            for r in runs
            if r.stage == "verify"
            for a in reversed(r.artifacts())
            if a.get("type") == "verified" and a.get("promoted")
        ),
        None,
    )
    moved = last_move(config)  # a rollback (CLI or TUI) after the last verify's promotion shows here
    if moved and (not promoted or moved["time"] > (promoted.get("time") or 0)):
        yield f"served as {config.ollama.model}:latest: {moved.get('builds')} ({moved.get('action')} {_when(moved['time'], now)})"
    elif promoted:
        yield f"served as {config.ollama.model}:latest: {promoted.get('path')} (promoted {_when(promoted.get('time'), now)})"


def last_move(config: Config) -> dict | None:
    """The last completed promote or rollback of this model (core/ollama/promote.py writes it)."""
    try:
        state = json.loads((config.paths.state / "ollama-latest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and state.get("model") == config.ollama.model
    return state if ok and isinstance(state.get("time"), (int, float)) else None


# -- w4tui config ---------------------------------------------------------------------------------
def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if is_dataclass(value):
        for f in fields(value):
            if f.name != "file":
                yield from _leaves(getattr(value, f.name), f"{prefix}{f.name}" if not prefix else f"{prefix}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}")
    else:
        yield prefix, value


def _set_in(table: dict, key: str) -> bool:
    node: Any = table
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _show(value: Any) -> str:
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def config_lines(config: Config, environ: dict[str, str]) -> Iterator[str]:
    """Every key with the value in effect (paths resolved) and where it came from."""
    default = default_config_path()
    user: dict = {}
    if config.file.resolve() != default.resolve():
        with open(config.file, "rb") as fh:
            user = tomllib.load(fh)
    yield f"# config: {config.file}" + ("" if user or config.file == default else " (empty)")
    yield f"# defaults: {default}"
    section = None
    for key, value in _leaves(config):
        head, _, _ = key.partition(".")
        if head != section:
            section = head
            yield f"[{head}]"
        source = str(config.file) if _set_in(user, key) else "default"
        if key == "ollama.host" and environ.get("OLLAMA_HOST"):
            source += f"; OLLAMA_HOST={environ['OLLAMA_HOST']} is used instead"
        yield f"{key.partition('.')[2]} = {_show(value)}    # {source}"
