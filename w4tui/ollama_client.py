"""Plain functions over the official ``ollama`` client, shared by the stages and the TUI.

Host: ``OLLAMA_HOST`` in the environment wins over ``[ollama] host``, as with the ollama CLI.
Every failure becomes an ``OllamaError`` with one line a person can act on.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

from .config import Config

MIN_VERSION = (0, 5, 5)  # the first server with files-based /api/create
FALLBACK_STOPS = ["<|im_end|>", "<|endoftext|>"]


class OllamaError(Exception):
    """Ollama is unreachable, too old, or refused something; str() is the message to show."""


def host(config: Config) -> str:
    return os.environ.get("OLLAMA_HOST") or config.ollama.host


def client(config: Config, timeout: float | None = None):
    from ollama import Client

    return Client(host=host(config), timeout=timeout)


def call(config: Config, fn, *args, **kwargs):
    """Run ``fn(*args)`` turning transport and API failures into OllamaError."""
    import httpx
    from ollama import ResponseError

    try:
        return fn(*args, **kwargs)
    except ResponseError as exc:
        raise OllamaError(f"Ollama at {host(config)}: {exc.error} (HTTP {exc.status_code})") from None
    except (httpx.HTTPError, ConnectionError) as exc:
        raise OllamaError(f"Ollama is not reachable at {host(config)} ({exc.__class__.__name__}); start it with "
                          f"`ollama serve` (or the app), or point OLLAMA_HOST / [ollama] host at it") from None


def version(config: Config, timeout: float = 5.0) -> str:
    c = client(config, timeout)
    response = call(config, c._client.get, "/api/version")  # the client has no wrapper for it
    if response.status_code != 200:
        raise OllamaError(f"Ollama at {host(config)} answered HTTP {response.status_code} to /api/version")
    return str(response.json().get("version", "0"))


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3]) or (0,)


def require_files_api(config: Config) -> str:
    found = version(config)
    if parse_version(found) < MIN_VERSION:
        raise OllamaError(f"Ollama {found} at {host(config)} is too old: deploying a GGUF needs 0.5.5 or newer "
                          "(files-based create); upgrade Ollama")
    return found


def list_models(config: Config, timeout: float = 5.0) -> list[dict[str, Any]]:
    response = call(config, client(config, timeout).list)
    return [m.model_dump() for m in response.models]


def running(config: Config, timeout: float = 5.0) -> list[dict[str, Any]]:
    response = call(config, client(config, timeout).ps)
    return [m.model_dump() for m in response.models]


def show(config: Config, model: str, timeout: float = 10.0) -> dict[str, Any]:
    return call(config, client(config, timeout).show, model).model_dump(by_alias=False)


def exists(config: Config, model: str) -> bool:
    names = {m["model"] for m in list_models(config)}
    return model in names or f"{model}:latest" in names


def copy(config: Config, source: str, destination: str) -> None:
    call(config, client(config, 30).copy, source, destination)


def delete(config: Config, model: str) -> None:
    call(config, client(config, 30).delete, model)


def iterate(config: Config, stream) -> Iterator[Any]:
    """Parts of a streamed response as they arrive; an error inside the stream raises OllamaError."""
    iterator = iter(stream)
    while (part := call(config, next, iterator, None)) is not None:
        yield part


def generate_stream(config: Config, model: str, prompt: str, options: dict | None = None,
                    timeout: float | None = 600) -> Iterator[dict[str, Any]]:
    stream = call(config, client(config, timeout).generate, model=model, prompt=prompt, stream=True,
                  options=options or None)
    for part in iterate(config, stream):
        yield part.model_dump()


def unload_all(config: Config, timeout: float = 3.0) -> list[str]:
    """Unload every running model (keep_alive=0), to free memory before training. Ollama not
    running means nothing is loaded: that is not an error here."""
    try:
        models = running(config, timeout)
    except OllamaError:
        return []
    c = client(config, timeout)
    for model in models:
        call(config, c.generate, model=model["model"], keep_alive=0)
    return [m["model"] for m in models]


def parse_parameters(text: str | None) -> dict[str, list[str]]:
    """``ollama show``'s parameters text (``stop "<|im_end|>"`` per line) as key -> values."""
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            value = parts[1].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out.setdefault(parts[0], []).append(value)
    return out


def base_template(config: Config) -> tuple[str, list[str], str]:
    """TEMPLATE and stop tokens of the library model the build inherits, and where they came from.
    Falls back to the built-in Qwen2.5 template: never deploy without one (ollama#6823, #8363)."""
    try:
        info = show(config, config.ollama.template_from)
    except OllamaError as exc:
        if "not found" not in str(exc):
            raise
        info = {}
    template = info.get("template")
    if template:
        stops = parse_parameters(info.get("parameters")).get("stop") or FALLBACK_STOPS
        return template, stops, config.ollama.template_from
    from importlib.resources import files

    builtin = files("w4tui").joinpath("data/qwen2.5-coder.template").read_text(encoding="utf-8")
    return builtin, list(FALLBACK_STOPS), "built-in Qwen2.5 template"


def tag(config: Config, name: str) -> str:
    return f"{config.ollama.model}:{name}"


def promote(config: Config, build: str) -> str:
    """Make ``build`` the served ``latest``; the old ``latest`` becomes ``previous``."""
    latest, previous = tag(config, "latest"), tag(config, "previous")
    if exists(config, latest):
        copy(config, latest, previous)
    copy(config, build, latest)
    return f"{latest} is now {build}" + (f"; the old one is kept as {previous}" if exists(config, previous) else "")


def rollback(config: Config) -> str:
    latest, previous = tag(config, "latest"), tag(config, "previous")
    if not exists(config, previous):
        raise OllamaError(f"no {previous} to roll back to (it appears after the second verified build)")
    copy(config, previous, latest)
    return f"{latest} rolled back to {previous}"
