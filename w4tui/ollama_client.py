"""Plain functions over the official ``ollama`` client, shared by the stages and the TUI (no torch here).

Host: ``OLLAMA_HOST`` in the environment wins over ``[ollama] host``, as with the ollama CLI and client,
so any command can be pointed at another server. Every failure becomes an ``OllamaError``: one line a
person can act on, plus a hint. Builds are ``<model>:<build tag>`` (immutable); ``latest`` moves only by
``promote`` (after verification) and ``previous`` keeps the one before, so ``rollback`` can restore it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from w4tui.config import Config

MIN_VERSION = (0, 5, 5)  # the first server with files-based /api/create
FALLBACK_STOPS = ["<|im_end|>", "<|endoftext|>"]
SERVER_QUANTIZE = {"Q4_K_M": "q4_K_M", "Q4_K_S": "q4_K_S", "Q8_0": "q8_0"}  # what Ollama quantizes itself
START_HINT = "start it with `ollama serve` or the Ollama app, or point OLLAMA_HOST / [ollama] host at a running server"


class OllamaError(Exception):
    """Ollama is unreachable, too old, or refused something. ``str()`` is the line to show."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


def host(config: Config) -> str:
    return os.environ.get("OLLAMA_HOST") or config.ollama.host


def client(config: Config, timeout: float | None = 10.0):
    """An ``ollama.Client`` for the chosen host. ``timeout`` bounds each read (None: wait for ever);
    connecting is always bounded, so a server that is down fails fast."""
    import httpx
    from ollama import Client

    return Client(host=host(config), timeout=httpx.Timeout(timeout, connect=5.0))


@contextlib.contextmanager
def errors(config: Config) -> Iterator[None]:
    """Turn the client's and httpx's exceptions into OllamaError."""
    import httpx
    from ollama import ResponseError

    try:
        yield
    except ResponseError as exc:
        code = f" (HTTP {exc.status_code})" if exc.status_code not in (-1, 200) else ""
        raise OllamaError(f"Ollama at {host(config)}: {exc.error}{code}") from None
    except httpx.TimeoutException:
        raise OllamaError(
            f"Ollama at {host(config)} did not answer in time",
            hint="is it busy loading a model? try again, or restart it",
        ) from None
    except (httpx.TransportError, ConnectionError):
        raise OllamaError(f"Ollama is not reachable at {host(config)}", hint=START_HINT) from None


def full_name(model: str) -> str:
    """``name`` -> ``name:latest``, as the server names it."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def tag(config: Config, name: str) -> str:
    return f"{config.ollama.model}:{name}"


# -- reading --------------------------------------------------------------------------------------
def version(config: Config) -> str:
    with errors(config), client(config, 10) as c:
        response = c._client.get("/api/version")  # the client has no wrapper for /api/version
    if response.status_code != 200:
        raise OllamaError(f"{host(config)} answered HTTP {response.status_code} to /api/version: is it Ollama?")
    return str(response.json().get("version", "0"))


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("-")[0])[:3]) or (0,)


def require_files_api(config: Config) -> str:
    """The server's version; OllamaError when it predates files-based create (0.0.0 is a dev build)."""
    found = version(config)
    if (0, 0, 0) < parse_version(found) < MIN_VERSION:
        raise OllamaError(
            f"Ollama {found} at {host(config)} is too old: deploying a GGUF needs 0.5.5 or newer",
            hint="upgrade Ollama (https://ollama.com/download), or create the model by hand from "
            "the Modelfile deploy writes: ollama create NAME -f FILE",
        )
    return found


def list_models(config: Config) -> list[dict[str, Any]]:
    """The server's models (``ollama list``): model, digest, size, modified_at, details."""
    with errors(config), client(config) as c:
        return [m.model_dump() for m in c.list().models]


def running(config: Config) -> list[dict[str, Any]]:
    """Loaded models (``ollama ps``): model, size, size_vram, expires_at, details."""
    with errors(config), client(config) as c:
        return [m.model_dump() for m in c.ps().models]


def digests(config: Config) -> dict[str, str]:
    return {m["model"]: m["digest"] for m in list_models(config)}


def exists(config: Config, model: str) -> bool:
    return full_name(model) in digests(config)


def show(config: Config, model: str) -> dict[str, Any]:
    """``/api/show`` as a dict, plus ``system`` and ``weights`` (the model blob's digest) read from its
    Modelfile text: the client's ShowResponse drops the server's ``system`` field."""
    with errors(config), client(config) as c:
        info = c.show(model).model_dump()
    modelfile = info.get("modelfile") or ""
    system = re.search(r'^SYSTEM (?:"""(.*?)"""|(.*))$', modelfile, re.M | re.S)
    info["system"] = (system.group(1) if system.group(1) is not None else system.group(2)) if system else ""
    weights = re.search(r"^FROM \S*sha256[-:]([0-9a-f]{64})", modelfile, re.M)
    info["weights"] = f"sha256:{weights.group(1)}" if weights else None
    return info


def parse_parameters(text: str | None) -> dict[str, list[str]]:
    """``ollama show``'s parameters text (``stop    "<|im_end|>"`` per line, Go-quoted) as key -> values."""
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            value = parts[1].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                try:
                    value = json.loads(value)
                except ValueError:
                    value = value[1:-1]
            out.setdefault(parts[0], []).append(value)
    return out


def builtin_template() -> str:
    return files("w4tui").joinpath("data/qwen2.5-coder.template").read_text(encoding="utf-8")


def base_template(config: Config) -> tuple[str, list[str], str]:
    """TEMPLATE and stop tokens of ``[ollama] template_from`` as the live server reports it, and where
    they came from. Falls back to the built-in Qwen2.5 ChatML template: never deploy without one, or
    Ollama serves a fine-tune with a bare prompt (ollama#6823, #8363)."""
    source = config.ollama.template_from
    try:
        info = show(config, source)
    except OllamaError as exc:
        if "not found" not in exc.message:
            raise
        return builtin_template(), list(FALLBACK_STOPS), f"built-in Qwen2.5 template ({source} is not on the server)"
    if not (info.get("template") or "").strip():
        return builtin_template(), list(FALLBACK_STOPS), f"built-in Qwen2.5 template ({source} has none)"
    stops = parse_parameters(info.get("parameters")).get("stop") or list(FALLBACK_STOPS)
    return info["template"], stops, source


# -- writing --------------------------------------------------------------------------------------
def has_blob(config: Config, digest: str) -> bool:
    with errors(config), client(config) as c:
        return c._client.head(f"/api/blobs/{digest}").status_code == 200


def push_blob(config: Config, path: Path, digest: str, progress: Callable[[int], None] = lambda n: None) -> None:
    """Upload ``path`` as blob ``digest`` (the server checks the digest), reporting bytes sent."""

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(4 << 20):
                yield chunk
                progress(len(chunk))

    with errors(config), client(config, None) as c:
        response = c._client.post(
            f"/api/blobs/{digest}", content=chunks(), headers={"Content-Length": str(path.stat().st_size)}
        )
    if response.status_code not in (200, 201):
        error = _error_text(response)
        raise OllamaError(f"Ollama at {host(config)} refused the upload of {path.name}: {error}")


def create(config: Config, model: str, **request: Any) -> Iterator[dict[str, Any]]:
    """Stream ``/api/create`` status parts; an error inside the stream raises OllamaError."""
    with errors(config), client(config, None) as c:
        for part in c.create(model=model, stream=True, **request):
            yield part.model_dump(exclude_none=True)


def copy(config: Config, source: str, destination: str) -> None:
    with errors(config), client(config, 30) as c:
        c.copy(source, destination)


def delete(config: Config, model: str) -> None:
    with errors(config), client(config, 30) as c:
        c.delete(model)


def generate_stream(
    config: Config,
    model: str,
    prompt: str,
    options: dict | None = None,
    keep_alive: str | float | None = None,
    timeout: float | None = 600,
) -> Iterator[dict[str, Any]]:
    """Stream ``/api/generate`` parts as dicts (the last has done=True and the timing fields)."""
    with errors(config), client(config, timeout) as c:
        for part in c.generate(model=model, prompt=prompt, stream=True, options=options or None, keep_alive=keep_alive):
            yield part.model_dump(exclude_none=True)


def unload_all(config: Config, wait_s: float = 10.0) -> list[str]:
    """Unload every running model (keep_alive=0) to free memory before training, and wait until
    ``/api/ps`` shows them gone. Ollama not running means nothing is loaded: not an error here."""
    try:
        loaded = [m["model"] for m in running(config)]
    except OllamaError:
        return []
    with errors(config), client(config, 60) as c:
        for model in loaded:
            c.generate(model=model, keep_alive=0)
    deadline = time.monotonic() + wait_s
    while running(config) and time.monotonic() < deadline:
        time.sleep(0.2)
    return loaded


def promote(config: Config, build: str) -> str:
    """Make ``build`` the served ``latest``; the old ``latest`` is kept as ``previous`` (a copy is cheap:
    the blobs are shared). Returns what happened, in one line."""
    name = full_name(build).rsplit(":", 1)[0]
    latest, previous = f"{name}:latest", f"{name}:previous"
    known = digests(config)
    if full_name(build) not in known:
        raise OllamaError(f"{build} is not on the server at {host(config)}")
    old = known.get(latest)
    if old == known[full_name(build)]:
        return f"{latest} already is {build}"
    if old:
        copy(config, latest, previous)
    copy(config, build, latest)
    return f"{latest} is now {build}" + (f"; the one before is kept as {previous}" if old else "")


def rollback(config: Config) -> str:
    """Point ``latest`` back at ``previous``. Returns what happened; OllamaError when there is nothing."""
    latest, previous = tag(config, "latest"), tag(config, "previous")
    known = digests(config)
    if previous not in known:
        raise OllamaError(f"no {previous} to roll back to: it appears when a second verified build is promoted")
    if known.get(latest) == known[previous]:
        raise OllamaError(
            f"{latest} already is {previous}: nothing to roll back",
            hint=f"to go further back: ollama cp {config.ollama.model}:<build tag> {latest}",
        )
    was, now = _builds(known, known.get(latest)), _builds(known, known[previous])
    copy(config, previous, latest)
    return f"{latest} rolled back to {previous} ({now or known[previous][:12]})" + (f"; it was {was}" if was else "")


def _builds(known: dict[str, str], digest: str | None) -> str:
    return ", ".join(n for n, d in known.items() if d == digest and not n.endswith((":latest", ":previous")))


def _error_text(response) -> str:
    try:
        return str(response.json().get("error")) or f"HTTP {response.status_code}"
    except ValueError:
        return f"HTTP {response.status_code} {response.text[:200]}"
