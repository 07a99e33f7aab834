"""Plain functions over the official ``ollama`` client, shared by the stages and the TUI (no torch here).

Host: ``OLLAMA_HOST`` in the environment wins over ``[ollama] host``, as with the ollama CLI and client,
so any command can be pointed at another server; both are read as Ollama's CLI reads OLLAMA_HOST
(envconfig/config.go ConnectableHost: ``host:port`` without a scheme, 0.0.0.0 means this machine). Every failure becomes an ``OllamaError``: one line a
person can act on, plus a hint. Builds are ``<model>:<build tag>`` (immutable); ``latest`` moves only by
``promote`` (after verification) and ``previous`` keeps the one before, so ``rollback`` can restore it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from core.config import Config
from core.errors import ActionableError
from core.ollama import modelfile as ollama_modelfile

MIN_VERSION = (0, 5, 5)  # the first server with files-based /api/create
FALLBACK_STOPS = ["<|im_end|>", "<|endoftext|>"]
SERVER_QUANTIZE = {"Q4_K_M": "q4_K_M", "Q4_K_S": "q4_K_S", "Q8_0": "q8_0"}  # what Ollama quantizes itself
START_HINT = "start it with `ollama serve` or the Ollama app, or point OLLAMA_HOST / [ollama] host at a running server"


class OllamaError(ActionableError):
    """Ollama is unreachable, too old, or refused something. ``str()`` is the line to show, hint included
    (its callers print it whole); ``message`` and ``hint`` apart for a stage's error event."""

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


def host(config: Config) -> str:
    return connectable(os.environ.get("OLLAMA_HOST") or config.ollama.host)


def connectable(value: str) -> str:
    """A host setting as the URL to connect to, read as envconfig/config.go Host() + ConnectableHost()
    read OLLAMA_HOST: no scheme means http and port 11434 (a scheme without a port: 80/443), and an
    unspecified bind address (0.0.0.0, ::) means the loopback one."""
    s = value.strip()
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport, default_port = "http", s, "11434"
    else:
        default_port = {"http": "80", "https": "443"}.get(scheme, "11434")
    hostport, _, path = hostport.partition("/")
    split = re.fullmatch(r"\[([^\]]*)\]:(.*)", hostport) or re.fullmatch(r"([^:\[\]]*):([^:]*)", hostport)
    if split:
        name, port = split.groups()
    else:  # Go's net.SplitHostPort failed: a bare host or IP gets the default port
        name, port = (hostport.strip("[]") or "127.0.0.1"), default_port
    if not port.isdigit() or int(port) > 65535:
        port = default_port
    name = name or "127.0.0.1"  # ":11434": Go dials the local machine for an empty host
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(name).is_unspecified:
            name = "127.0.0.1" if ipaddress.ip_address(name).version == 4 else "::1"
    name = f"[{name}]" if ":" in name else name
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def client(config: Config, timeout: float | None = 10.0):
    """An ``ollama.Client`` for the chosen host. ``timeout`` bounds each read (None: wait for ever);
    connecting is always bounded, so a server that is down fails fast."""
    import httpx  # httpx and the ollama client (~150 ms) only when Ollama is asked, not at import
    from ollama import Client  # as above

    return Client(host=host(config), timeout=httpx.Timeout(timeout, connect=5.0), verify=_ssl_context())


@functools.lru_cache(maxsize=1)
def _ssl_context():
    """One TLS context for every client: httpx builds a new one per client otherwise (reading the CA
    bundle, ~0.1 s), which made each call to a local server cost that much."""
    import httpx  # httpx and the ollama client (~150 ms) only when Ollama is asked, not at import

    return httpx.create_ssl_context()


@contextlib.contextmanager
def errors(config: Config) -> Iterator[None]:
    """Turn the client's and httpx's exceptions into OllamaError."""
    import httpx  # httpx and the ollama client (~150 ms) only when Ollama is asked, not at import
    from ollama import ResponseError  # as above

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
    except httpx.RemoteProtocolError:
        raise OllamaError(
            f"Ollama at {host(config)} closed the connection without an answer",
            hint="it may have done the request or not; see the server's log",
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
    """``/api/show`` as a dict, plus what its Modelfile text says (the client's ShowResponse drops the
    server's ``system`` field): ``system``, ``renderer``/``parser`` and ``weights`` (the model blob's
    digest), parsed by the rules of the server's parser/parser.go (bare, "…" and \"\"\"…\"\"\" values)."""
    with errors(config), client(config) as c:
        info = c.show(model).model_dump()
    try:
        commands = ollama_modelfile.parse(info.get("modelfile") or "")
    except ValueError:
        commands = []
    first = {}
    for name, value in commands:
        first.setdefault(name, value)
    info["system"], info["renderer"], info["parser"] = (first.get(k, "") for k in ("system", "renderer", "parser"))
    weights = re.search(r"sha256[-:]([0-9a-f]{64})", first.get("from", ""))
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


def template_problem(template: str, info: dict[str, Any]) -> str | None:
    """Why a base's template cannot be inherited, or None. images.go GetModel reports ``{{ .Prompt }}``
    (template.DefaultTemplate) for a model without one; a RENDERER/PARSER model renders in Go code and
    its TEMPLATE is not what it serves; a Jinja template is not a Go one; a Qwen2.5 base needs ChatML."""
    text = template.strip()
    if not text or re.fullmatch(r"\{\{-?\s*\.Prompt\s*-?\}\}", text):
        return "has no TEMPLATE (the server reports {{ .Prompt }})"
    if info.get("renderer") or info.get("parser"):
        return f"renders with RENDERER/PARSER {info.get('renderer') or info.get('parser')} instead of a TEMPLATE"
    if "{%" in text:
        return "reports a Jinja chat template, not an Ollama TEMPLATE"
    if "<|im_start|>" not in text or "<|im_end|>" not in text:
        return "has a TEMPLATE without the ChatML markers a Qwen2.5 model needs"
    return None


def base_template(config: Config) -> tuple[str, list[str], str, str]:
    """TEMPLATE and stop tokens of ``[ollama] template_from`` as the live server reports it, and where
    each came from. Falls back to the built-in Qwen2.5 ChatML template and stops: never deploy without
    them, or Ollama serves a fine-tune with a bare prompt (ollama#6823, #8363)."""
    source = config.ollama.template_from
    try:
        info = show(config, source)
    except OllamaError as exc:
        if "not found" not in exc.message:
            raise
        why = f"built-in Qwen2.5 template ({source} is not on the server)"
        return builtin_template(), list(FALLBACK_STOPS), why, "built-in stops"
    if problem := template_problem(info.get("template") or "", info):
        return (
            builtin_template(),
            list(FALLBACK_STOPS),
            f"built-in Qwen2.5 template ({source} {problem})",
            "built-in stops",
        )
    stops = parse_parameters(info.get("parameters")).get("stop")
    if not stops:  # the library qwen2.5-coder Modelfile has no stop PARAMETERs
        return info["template"], list(FALLBACK_STOPS), source, f"built-in stops ({source} has no stop PARAMETERs)"
    return info["template"], stops, source, source


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


def chat_stream(
    config: Config, model: str, messages: list[dict], options: dict | None = None, timeout: float | None = 600
) -> Iterator[dict[str, Any]]:
    """Stream ``/api/chat`` parts as dicts: ``message.content`` pieces, the last with done=True."""
    with errors(config), client(config, timeout) as c:
        for part in c.chat(model=model, messages=messages, stream=True, options=options or None):
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


def _error_text(response) -> str:
    try:
        return str(response.json().get("error")) or f"HTTP {response.status_code}"
    except ValueError:
        return f"HTTP {response.status_code} {response.text[:200]}"
