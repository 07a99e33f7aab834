"""The forgetting guard: a fixed set of prompts with required and forbidden patterns, answered by every
build through Ollama and scored, and compared with the build ``latest`` points at.

A night of narrow data can make the model worse at everything else while the verify prompts still
pass. Each answer scores the share of its checks it passes; the build's score is the mean over the
prompts. Promotion is refused when the score falls more than ``[verify] max_regression`` below
latest's, naming the prompts that got worse. Scores are kept per model digest (the same weights and
Modelfile answer the same at temperature 0), so latest is answered again only when nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import StageError
from core.fsutil import atomic_write_text
from core.ollama import client as oc

SHIPPED = Path(__file__).resolve().parents[2] / "w4tui" / "data" / "regression.toml"
DEFAULT = "default"  # the name of the shipped set in [verify] regression


@dataclass(frozen=True)
class Prompt:
    name: str
    prompt: str
    required: tuple[str, ...]
    forbidden: tuple[str, ...]


def load(entries: list[str], base: Path) -> list[Prompt]:
    """The prompts of every file in ``entries`` ("default" is the shipped set; others relative to ``base``)."""
    prompts: list[Prompt] = []
    for entry in entries:
        path = SHIPPED if entry == DEFAULT else (base / Path(entry).expanduser())
        prompts += _read(path)
    names = [p.name for p in prompts]
    if dup := next((n for n in names if names.count(n) > 1), None):
        raise StageError(
            f"[verify] regression: the prompt name {dup!r} is used twice", hint="give each prompt its own name"
        )
    return prompts


def _read(path: Path) -> list[Prompt]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: regression prompt file not found", hint="fix [verify] regression") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise StageError(f"{path}: not a readable TOML file: {exc}") from None
    entries = doc.get("prompt")
    if not isinstance(entries, list) or not entries or set(doc) - {"prompt"}:
        raise StageError(f"{path}: expected [[prompt]] tables only (with name, prompt, required, forbidden)")
    out = []
    for i, entry in enumerate(entries, start=1):
        where = f"{path}: prompt {i}"
        if not isinstance(entry, dict) or set(entry) - {"name", "prompt", "required", "forbidden"}:
            raise StageError(f"{where}: unknown keys (known: name, prompt, required, forbidden)")
        if not all(isinstance(entry.get(k), str) and entry[k].strip() for k in ("name", "prompt")):
            raise StageError(f"{where}: 'name' and 'prompt' must be non-empty strings")
        lists = {k: entry.get(k, []) for k in ("required", "forbidden")}
        for key, patterns in lists.items():
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise StageError(f"{where} ({entry['name']}): '{key}' must be a list of strings")
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise StageError(f"{where} ({entry['name']}): bad {key} pattern {pattern!r}: {exc}") from None
        if not lists["required"] and not lists["forbidden"]:
            raise StageError(f"{where} ({entry['name']}): needs at least one required or forbidden pattern")
        out.append(Prompt(entry["name"], entry["prompt"], tuple(lists["required"]), tuple(lists["forbidden"])))
    return out


def score(prompt: Prompt, answer: str) -> dict:
    """The share of checks this answer passes, and which failed."""
    missing = [p for p in prompt.required if not re.search(p, answer)]
    present = [p for p in prompt.forbidden if re.search(p, answer)]
    checks = len(prompt.required) + len(prompt.forbidden)
    return {"score": round(1 - (len(missing) + len(present)) / checks, 6), "missing": missing, "forbidden": present}


def set_key(prompts: list[Prompt], num_predict: int) -> str:
    """Identifies the prompt set and settings: stored scores count only for the same ones."""
    raw = json.dumps([[p.name, p.prompt, p.required, p.forbidden] for p in prompts] + [num_predict])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def run(prompts: list[Prompt], answer: Callable[[str], str], progress: Callable[[int, str], None]) -> dict:
    """Answer and score every prompt: {"score": mean, "prompts": {name: {score, missing, forbidden}}}."""
    results = {}
    for i, prompt in enumerate(prompts):
        progress(i, prompt.name)
        results[prompt.name] = score(prompt, answer(prompt.prompt))
    total = sum(r["score"] for r in results.values()) / len(results)
    return {"score": round(total, 6), "prompts": results}


def compare(new: dict, old: dict, max_regression: float) -> tuple[bool, list[str]]:
    """(blocked, the prompts that scored lower than in ``old``, worst first)."""
    worse = [
        (old["prompts"][n]["score"] - r["score"], n)
        for n, r in new["prompts"].items()
        if n in old["prompts"] and r["score"] < old["prompts"][n]["score"]
    ]
    return old["score"] - new["score"] > max_regression + 1e-9, [n for _, n in sorted(worse, reverse=True)]


class Store:
    """Scores by model digest and prompt set, under ``<state>/regression/``."""

    def __init__(self, state: Path) -> None:
        self.dir = state / "regression"

    def _path(self, digest: str, key: str) -> Path:
        return self.dir / f"{digest.removeprefix('sha256:')[:24]}-{key}.json"

    def get(self, digest: str, key: str) -> dict | None:
        try:
            return json.loads(self._path(digest, key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, digest: str, key: str, result: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._path(digest, key), json.dumps(result, indent=1) + "\n")


def guard(config, model: str, events) -> dict | None:
    """Score ``model`` and latest on the configured set; None when [verify] regression is empty.
    ``blocked`` is whether promoting ``model`` would lose more than [verify] max_regression."""
    prompts = load(config.verify.regression, config.base_dir)
    if not prompts:
        return None
    limit = config.verify.regression_num_predict
    key, store = set_key(prompts, limit), Store(config.paths.state)
    known = oc.digests(config)
    latest = oc.tag(config, "latest")

    def scored(name: str) -> dict:
        digest = known.get(oc.full_name(name), "")
        if digest and (kept := store.get(digest, key)):
            return kept

        def answer(text: str) -> str:
            parts = oc.generate_stream(config, name, text, options={"num_predict": limit})
            return "".join(p.get("response", "") for p in parts)

        def progress(i: int, prompt_name: str) -> None:
            events.progress(i, len(prompts), "regression prompts", message=f"{name}: {prompt_name}")

        result = run(prompts, answer, progress)
        if digest:
            store.put(digest, key, result)
        return result

    new = scored(model)
    out = {
        "score": new["score"],
        "prompts": new["prompts"],
        "latest": None,
        "latest_score": None,
        "worse": [],
        "blocked": False,
    }
    if latest in known and known[latest] != known.get(oc.full_name(model)):
        old = scored(latest)
        blocked, worse = compare(new, old, config.verify.max_regression)
        out.update(latest=latest, latest_score=old["score"], worse=worse, blocked=blocked)
    events.log(
        f"regression score {out['score']:.3f} on {len(prompts)} prompts"
        + (f" ({latest}: {out['latest_score']:.3f})" if out["latest"] else " (no latest to compare with)")
        + (f"; worse than latest: {', '.join(out['worse'])}" if out["worse"] else "")
    )
    return out


def blocked_message(result: dict, limit: float) -> str:
    return (
        f"forgetting guard: regression score {result['score']:.3f} is more than {limit:g} below "
        f"{result['latest']}'s {result['latest_score']:.3f}; worse: {', '.join(result['worse'])}"
    )


def fields(result: dict | None) -> dict:
    """Flat fields for verify's artifact event (None values are left out of events)."""
    if result is None:
        return {}
    return {
        "regression_score": result["score"],
        "regression_latest_score": result["latest_score"],
        "regression_worse": ", ".join(result["worse"]) or None,
        "regression_blocked": result["blocked"],
        # each prompt's score, flat: "name=0.67;other=1.00" (the compare view shows one row each)
        "regression_prompts": ";".join(f"{name}={r['score']:.2f}" for name, r in result["prompts"].items()) or None,
    }
