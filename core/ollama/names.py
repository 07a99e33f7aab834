"""Ollama model names checked exactly as the server checks them, so a bad name is refused here, in one
line, instead of by the server halfway through a deploy. Standard library only (config imports it).

``types/model/name.go``: ``[host/][namespace/]model[:tag]``; each part starts with a letter, digit or
``_`` and goes on with those and ``-`` ``_`` ``.`` (no ``.`` in a namespace; ``:`` only in the host);
host 1-350 characters, the others 1-80. ``internal/modelref/modelref.go``: a trailing ``:local``,
``:cloud`` or ``-cloud`` tag is a source selector on show/generate/delete, not part of the name.
"""

from __future__ import annotations

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
_MAX = {"host": 350, "namespace": 80, "model": 80, "tag": 80}


def _valid_part(kind: str, s: str) -> bool:
    # name.go isValidPart: ASCII letters/digits/_ first, then also - and . (not in a namespace), : in a host
    if not 1 <= len(s) <= _MAX[kind]:
        return False
    for i, c in enumerate(s):
        alnum = c.isascii() and (c.isalnum() or c == "_")
        if i == 0:
            if not alnum:
                return False
        elif c == "." and kind == "namespace" or c == ":" and kind != "host":
            return False
        elif not (alnum or c in "-_.:"):
            return False
    return True


def parse(name: str) -> dict[str, str]:
    """name.go ParseName: the parts of ``name``, with the defaults merged in ("" for a promised but
    missing part, which then fails validation, as the server's MissingPart does)."""
    parts = {"host": "", "namespace": "", "model": "", "tag": ""}
    s = name
    if s.rfind(":") > s.rfind("/"):  # "/" is illegal in a tag, so the last ":" after it starts the tag
        s, _, parts["tag"] = s.rpartition(":")
        parts["tag"] = parts["tag"] or "!MISSING!"
    if "/" in s:
        s, _, parts["model"] = s.rpartition("/")
        if "/" in s:
            s, _, parts["namespace"] = s.rpartition("/")
            parts["namespace"] = parts["namespace"] or "!MISSING!"
            parts["host"] = s.split("://", 1)[-1] or "!MISSING!"
        else:
            parts["namespace"] = s or "!MISSING!"
        parts["model"] = parts["model"] or "!MISSING!"
    else:
        parts["model"] = s
    return {
        "host": parts["host"] or DEFAULT_HOST,
        "namespace": parts["namespace"] or DEFAULT_NAMESPACE,
        "model": parts["model"],
        "tag": parts["tag"] or DEFAULT_TAG,
    }


def name_problem(name: str) -> str | None:
    """Why the server would refuse ``name`` (None: it is valid), in words that fit after the name."""
    parts = parse(name)
    for kind in ("model", "tag", "namespace", "host"):
        value = parts[kind]
        if not _valid_part(kind, value):
            if kind == "namespace" and "." in value:
                return f"the namespace {value!r} contains '.', which Ollama does not allow"
            if not value or value == "!MISSING!":
                return f"the {kind} is empty"
            if len(value) > _MAX[kind]:
                return f"the {kind} is {len(value)} characters long; Ollama allows at most {_MAX[kind]}"
            return (
                f"the {kind} {value!r} must start with a letter, digit or '_' and contain only letters, "
                "digits, '_', '-' and '.'" + (" (no '.' in a namespace)" if kind == "namespace" else "")
            )
    return None


def routing_suffix(tag: str) -> str | None:
    """The source selector a tag would be read as (modelref.go parseSourceSuffix), or None."""
    low = tag.strip().lower()
    if low in ("local", "cloud"):
        return f":{low}"
    if "/" not in low and low.endswith("-cloud"):
        return "-cloud"
    return None


def tag_problem(tag: str) -> str | None:
    """Why ``tag`` cannot be a build tag: invalid, or read by the server as a source selector."""
    if not _valid_part("tag", tag):
        return name_problem(f"x:{tag}")
    if suffix := routing_suffix(tag):
        return (
            f"Ollama reads a '{suffix}' tag as a source selector (show/run/rm would go to "
            + ("the cloud" if "cloud" in suffix else "the plain name")
            + "), not as this build"
        )
    return None
