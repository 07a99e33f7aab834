"""What every hostile case checks, in one place: the exit code, no traceback anywhere a person looks (stderr,
the error event), one error line naming the culprit, and a workspace listed before and after (nothing left
behind, nothing lost).

A case runs a stage's ``main(argv)`` in this process when it can (fast), the way the runner runs it
(W4TUI_EVENTS set), and a real process only where the case needs one (kill -9, a closed pipe).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from shared_builds import linked, shared_build

from core.events import read_events

ROOT = Path(__file__).resolve().parents[2]
KILLER = Path(__file__).with_name("killer.py")
TRACEBACK_MARKS = ("Traceback (most recent call last)", "internal error", "please report it")


@dataclass
class Outcome:
    rc: int
    stderr: str
    events: list[dict] = field(default_factory=list)
    stdout: str = ""

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("kind") == kind]

    @property
    def error(self) -> dict:
        errors = self.of("error")
        assert errors, f"no error event; stderr: {self.stderr!r}"
        return errors[-1]

    def seen(self) -> str:
        """Everything a person reads: stderr and the error event (message and hint)."""
        return self.stderr + "".join(f"{e.get('message')} {e.get('hint')}" for e in self.of("error"))


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with what would change if it were replaced: kind, size, mtime (files)."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        # a directory's mtime moves when an entry comes and goes again: only its being there counts
        out[str(path.relative_to(root))] = (kind,) if kind == "d" else (kind, st.st_size, st.st_mtime_ns)
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary names a writer uses (atomic partials, replaced copies, download staging)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.endswith((".partial", ".old", ".part")) or p.name.startswith(".w4tui-merge-")
    )


def assert_one_line(outcome: Outcome, rc: int, *culprits: str) -> None:
    """The user-mistake contract: exit code, no traceback, one ``error:`` line on stderr naming the culprit."""
    seen = outcome.seen()
    for mark in TRACEBACK_MARKS:
        assert mark not in seen, f"{mark!r} shown to the user:\n{seen}"
    assert outcome.rc == rc, f"exit {outcome.rc}, expected {rc}; stderr:\n{outcome.stderr}"
    lines = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{outcome.stderr}"
    for culprit in culprits:
        assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
        if outcome.events:
            assert culprit in outcome.error["message"] + " " + str(outcome.error.get("hint")), outcome.error


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A config in tmp_path/ws (outputs, runs, state under it) selected via W4TUI_CONFIG, and cwd there."""
    ws = tmp_path / "ws"
    (ws / "outputs" / "adapters").mkdir(parents=True)
    (ws / "config.toml").write_text("")
    monkeypatch.setenv("W4TUI_CONFIG", str(ws / "config.toml"))
    monkeypatch.chdir(ws)
    return ws


@pytest.fixture
def stage(tmp_path):
    """Run ``stages.<module>.main(argv)`` in this process as the runner would; returns an Outcome."""
    counter = iter(range(10_000))

    def run(module: str, *args, env: dict | None = None) -> Outcome:
        events = tmp_path / "events" / f"{module}-{next(counter)}.jsonl"
        events.parent.mkdir(exist_ok=True)
        saved = dict(os.environ)
        os.environ.update({"W4TUI_EVENTS": str(events), "W4TUI_RUN_ID": "hostile", **(env or {})})
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = importlib.import_module(f"stages.{module}").main([str(a) for a in args])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return Outcome(rc, err.getvalue(), read_events(events), out.getvalue())

    return run


@pytest.fixture
def cli():
    """Run ``w4tui.cli.main(argv)`` in this process; argparse's own exits count as exit codes."""

    def run(*args) -> Outcome:
        from w4tui.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
        return Outcome(rc, err.getvalue(), [], out.getvalue())

    return run


def process(
    module: str,
    *args,
    kill_at: str | None = None,
    env: dict | None = None,
    events: Path | None = None,
    timeout: float = 120,
) -> Outcome:
    """Run ``python -m module`` in a real process; ``kill_at`` ("progress:3", "artifact:checkpoint") makes it
    SIGKILL itself at that event (tests/hostile/killer.py), a deterministic kill -9."""
    full_env = dict(os.environ, **(env or {}))
    if events is not None:
        full_env.update(W4TUI_EVENTS=str(events), W4TUI_RUN_ID="hostile")
    cmd = [sys.executable, str(KILLER), kill_at, module] if kill_at else [sys.executable, "-m", module]
    proc = subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout
    )
    return Outcome(proc.returncode, proc.stderr, read_events(events) if events else [], proc.stdout)


def write_adapter(path: Path, hidden: int = 64, r: int = 4, layers: int = 2, config: dict | None = None) -> Path:
    """A small PEFT LoRA adapter on q_proj (numpy only, no torch): what the train stage saves, in miniature.
    ``hidden`` other than the tiny model's 64 makes an adapter for another base shape."""
    from stages.weights.safetensors import SafetensorsWriter

    path.mkdir(parents=True, exist_ok=True)
    entries = []
    for layer in range(layers):
        key = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        entries += [(f"{key}.lora_A.weight", "F32", (r, hidden)), (f"{key}.lora_B.weight", "F32", (hidden, r))]
    writer = SafetensorsWriter(path / "adapter_model.safetensors", entries)
    rng = np.random.default_rng(0)
    for _, _, shape in entries:
        writer.write(rng.standard_normal(shape).astype(np.float32) * 0.01)
    writer.close()
    settings = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "tiny-qwen2",
        **(config or {}),
    }
    (path / "adapter_config.json").write_text(json.dumps(settings))
    return path


@pytest.fixture
def tiny_gguf(tmp_path_factory, tiny_model) -> Path:
    """The tiny model as an F16 GGUF written by the convert stage (once per run, shared_builds), hard-linked
    in a folder of the test's own. Read-only: copy it to change it."""
    from stages.convert_gguf import main

    def build(directory: Path) -> Path:
        out = directory / "tiny-f16.gguf"
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert main(["--model", str(tiny_model), "--output", str(out)]) == 0
        return out

    return linked(tmp_path_factory, shared_build(tmp_path_factory, "hostile-tiny-f16.gguf", build))


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, *options)`` mounts a small tmpfs (full-disk and read-only cases) and returns its path;
    the case is skipped where this process cannot mount one."""
    mounted: list[Path] = []

    def mount(size: str = "24m", *options: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        opts = ",".join([f"size={size}", *options])
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}): full-disk case not run")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
