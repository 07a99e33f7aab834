"""Moving ``latest`` and ``previous`` so that no failure loses a working model.

Ollama's copy is not atomic (server/images.go CopyModel truncates the destination manifest, then
writes it), so a copy that fails or is cut can leave its destination broken. Hence:

- every copy is checked afterwards: the destination lists the source's manifest digest and
  ``/api/show`` reads it (a copy is cheap: the blobs are shared);
- content is only ever overwritten when another name still holds it (an immutable build tag, or a
  ``kept-<digest>`` tag made first), so there is always a source to repair from;
- ``previous`` receives the old ``latest`` only after the new build passed verification, and before
  ``latest`` moves: at every step one of "before" (latest=old, previous=old previous) or "after"
  (latest=new, previous=old latest) can be restored;
- a journal in ``<[paths] state>/ollama-promotion.json`` records the step; the next promote or
  rollback first finishes or undoes an interrupted one (``recover``).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from core.config import Config
from core.fsutil import atomic_write_text
from core.ollama import client as oc

JOURNAL = "ollama-promotion.json"
SERVED = "ollama-latest.json"  # the last completed move of latest: w4tui/report.py reads it (no Ollama call)
POINTERS = ("latest", "previous")  # the tags that point at a build, moved only by promote and rollback


def _journal(config: Config) -> Path:
    return config.paths.state / JOURNAL


def _names(config: Config) -> tuple[str, str]:
    return oc.tag(config, "latest"), oc.tag(config, "previous")


def works(config: Config, name: str, digest: str | None) -> bool:
    """``name`` lists ``digest`` and the server can read it (show)."""
    if digest is None or oc.digests(config).get(name) != digest:
        return False
    try:
        oc.show(config, name)
    except oc.OllamaError:
        return False
    return True


def holders(config: Config, digest: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names on the server that hold ``digest``, immutable build tags first."""
    pointers = set(_names(config))
    found = [
        n
        for n, d in oc.digests(config).items()
        if d == digest and n not in exclude and n.rsplit(":", 1)[0] == config.ollama.model
    ]
    return sorted(found, key=lambda n: (n in pointers, n))


def keep(config: Config, digest: str, exclude: tuple[str, ...]) -> str:
    """A name other than ``exclude`` that holds ``digest``, making a ``kept-…`` tag when none does."""
    for name in holders(config, digest, exclude):
        if works(config, name, digest):
            return name
    kept = oc.tag(config, f"kept-{digest.split(':')[-1][:12]}")
    source = next(iter(holders(config, digest)), None)
    if source is None:
        raise oc.OllamaError(f"no name on the server holds {digest[:19]}…; nothing to keep it from")
    checked_copy(config, source, kept, digest)
    return kept


def checked_copy(config: Config, source: str, destination: str, digest: str) -> None:
    """Copy, then make sure the destination really holds ``digest`` and reads."""
    oc.copy(config, source, destination)
    if not works(config, destination, digest):
        raise oc.OllamaError(
            f"the copy of {source} to {destination} did not take (it lists another digest or cannot be read)",
            hint="see the server's log; the next promote repairs it",
        )


def _write(config: Config, state: dict) -> None:
    atomic_write_text(_journal(config), json.dumps(state, indent=2) + "\n")


def _read(config: Config) -> dict | None:
    try:
        state = json.loads(_journal(config).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    ok = isinstance(state, dict) and state.get("host") == oc.host(config) and state.get("model") == config.ollama.model
    return state if ok else None


def _set(config: Config, pointer: str, digest: str | None, source_hint: str | None = None) -> None:
    """Make ``pointer`` hold ``digest`` (None: remove the pointer), from a name that still holds it."""
    if digest is None:
        if pointer in oc.digests(config):
            oc.delete(config, pointer)
        return
    if works(config, pointer, digest):
        return
    sources = [
        n
        for n in ([source_hint] if source_hint else []) + holders(config, digest, (pointer,))
        if works(config, n, digest)
    ]
    if not sources:
        raise oc.OllamaError(
            f"cannot repair {pointer}: no working name holds {digest[:19]}… any more",
            hint=f"copy a build by hand: ollama cp {config.ollama.model}:<build tag> {pointer}",
        )
    checked_copy(config, sources[0], pointer, digest)


def pending(config: Config) -> dict | None:
    """The journal of an interrupted promotion or rollback of this model on this server, or None."""
    return _read(config)


def recover(config: Config) -> str | None:
    """Finish or undo a promotion or rollback that was interrupted; what was done, or None. A finished one
    is a completed move of latest: recorded as such (``w4tui status``, the next night's parent)."""
    state = _read(config)
    if state is None:
        return None
    latest, previous = _names(config)
    after = works(config, latest, state["latest_after"])
    target = ("latest_after", "previous_after") if after else ("latest_before", "previous_before")
    _set(config, latest, state[target[0]], state.get("kept_latest"))
    _set(config, previous, state[target[1]], state.get("kept_previous"))
    if after:
        digest = state["latest_after"]
        if state["action"] == "promotion":
            record_move(config, "promoted", state["build"])
        else:
            record_move(config, "rolled back", _builds(config, digest) or digest[:12])
    _journal(config).unlink(missing_ok=True)
    return f"an interrupted {state['action']} of {state['build']} was " + (
        "completed" if after else f"undone: {latest} and {previous} are as they were before it"
    )


def promote(config: Config, build: str) -> str:
    """Make the verified ``build`` the served ``latest``; the old ``latest`` becomes ``previous``.
    Returns what happened, in one line; OllamaError when it could not (latest still works)."""
    notes = [r for r in [recover(config)] if r]
    latest, previous = _names(config)
    build = oc.full_name(build)
    known = oc.digests(config)
    if build not in known:
        raise oc.OllamaError(f"{build} is not on the server at {oc.host(config)}")
    new, old, prev = known[build], known.get(latest), known.get(previous)
    if old == new:
        return "; ".join(notes + [f"{latest} already is {build}"])
    state = {
        "action": "promotion",
        "build": build,
        "host": oc.host(config),
        "model": config.ollama.model,
        "latest_before": old,
        "previous_before": prev,
        "latest_after": new,
        "previous_after": old or prev,
    }
    _write(config, state)

    def steps() -> None:
        if prev and prev != old:  # previous is about to be overwritten: its content keeps another name
            state["kept_previous"] = keep(config, prev, (previous,))
        if old:
            state["kept_latest"] = keep(config, old, (latest,))
            _write(config, state)
            _set(config, previous, old, state["kept_latest"])  # only now: the new build has passed
        _write(config, state)
        checked_copy(config, build, latest, new)

    _run_or_undo(config, steps, latest, new)
    _journal(config).unlink(missing_ok=True)
    record_move(config, "promoted", build)
    return "; ".join(notes + [f"{latest} is now {build}" + (f"; the one before is kept as {previous}" if old else "")])


def rollback(config: Config) -> str:
    """Point ``latest`` back at ``previous``. Returns what happened; OllamaError when there is nothing."""
    notes = [r for r in [recover(config)] if r]
    latest, previous = _names(config)
    known = oc.digests(config)
    if previous not in known or not works(config, previous, known[previous]):
        raise oc.OllamaError(f"no {previous} to roll back to: it appears when a second verified build is promoted")
    if known.get(latest) == known[previous]:
        raise oc.OllamaError(
            f"{latest} already is {previous}: nothing to roll back",
            hint=f"to go further back: ollama cp {config.ollama.model}:<build tag> {latest}",
        )
    old, target = known.get(latest), known[previous]
    was, now = _builds(config, old), _builds(config, target)
    state = {
        "action": "rollback",
        "build": previous,
        "host": oc.host(config),
        "model": config.ollama.model,
        "latest_before": old,
        "previous_before": target,
        "latest_after": target,
        "previous_after": target,
    }
    _write(config, state)
    if old:
        state["kept_latest"] = keep(config, old, (latest,))
        _write(config, state)
    _run_or_undo(config, lambda: checked_copy(config, previous, latest, target), latest, target)
    _journal(config).unlink(missing_ok=True)
    record_move(config, "rolled back", now or target[:12])
    return "; ".join(
        notes + [f"{latest} rolled back to {previous} ({now or target[:12]})" + (f"; it was {was}" if was else "")]
    )


def record_move(config: Config, action: str, builds: str) -> None:
    """The last completed move of latest ("promoted" or "rolled back", to which build names)."""
    state = {"action": action, "builds": builds, "model": config.ollama.model, "host": oc.host(config)}
    atomic_write_text(config.paths.state / SERVED, json.dumps({**state, "time": time.time()}) + "\n")


def _run_or_undo(config: Config, steps, latest: str, digest: str) -> None:
    """Run the copies; on a failure, ``latest`` either already holds ``digest`` (the server did the copy
    and only the answer was lost: done) or is put back as it was at once. If even that fails, the
    journal stays and the next promote or rollback repairs it first."""
    try:
        steps()
    except oc.OllamaError:
        with contextlib.suppress(oc.OllamaError):
            state = _read(config)
            if works(config, latest, digest) and state and works(config, _names(config)[1], state["previous_after"]):
                return
            recover(config)
        raise


def _builds(config: Config, digest: str | None) -> str:
    pointers = set(_names(config))
    return ", ".join(n for n in holders(config, digest, tuple(pointers)) if "kept-" not in n) if digest else ""
