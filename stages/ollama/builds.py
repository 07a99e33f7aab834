"""Which GGUF a build tag on the server was made from, so a second deploy of the same build is
recognised and any other refused (build tags are immutable).

The server cannot say it: since 0.30 a create passes every GGUF through llama-quantize COPY
(server/create.go copyLayerWithLlamaQuantize), so the served weights have a new digest, and a server
quantization changes them anyway. Deploy records each build it creates in
``<[paths] state>/ollama-builds.json``: host and tag -> the GGUF's sha256, the manifest digest the
server listed, the request's TEMPLATE digest and quantization. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.fsutil import atomic_write_text

RECORD = "ollama-builds.json"


def _path(config) -> Path:
    return config.paths.state / RECORD


def _key(host: str, model: str) -> str:
    return f"{host} {model}"


def fingerprint(gguf_digest: str, template: str, quantize: str | None) -> dict:
    return {
        "gguf_digest": gguf_digest,
        "template": hashlib.sha256(template.encode()).hexdigest()[:16],
        "quantize": quantize,
    }


def _load(config) -> dict:
    try:
        data = json.loads(_path(config).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lookup(config, host: str, model: str) -> dict | None:
    entry = _load(config).get(_key(host, model))
    return entry if isinstance(entry, dict) else None


def remember(config, host: str, model: str, digest: str, print_: dict) -> None:
    data = _load(config)
    data[_key(host, model)] = {"digest": digest, **print_}
    atomic_write_text(_path(config), json.dumps(data, indent=2, sort_keys=True) + "\n")


def same_build(config, host: str, model: str, listed_digest: str, print_: dict, served: dict) -> bool | None:
    """True: ``model`` on the server is this build; False: it is another; None: nothing says which.

    The record decides when it exists and still matches what the server lists; without it, a server
    that kept the uploaded blob as the weights (before 0.30, no quantization) can be compared directly."""
    entry = lookup(config, host, model)
    if entry is not None and entry.get("digest") == listed_digest:
        return {k: entry.get(k) for k in print_} == print_
    if not print_["quantize"] and served.get("weights") == print_["gguf_digest"]:
        return fingerprint(print_["gguf_digest"], served.get("template") or "", None) == print_
    return None
