"""The Modelfile of a build: what deploy sends to /api/create, written out so that
`ollama create NAME -f FILE` reproduces the build by hand. Standard library only."""

from __future__ import annotations

from pathlib import Path

from core.config import Config
from core.ollama import modelfile as ollama_modelfile

# PARAMETER order as in the config file; stops come last, one line each.
PARAMETER_KEYS = ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx")


def parameters(config: Config, stops: list[str]) -> dict[str, object]:
    p = config.ollama.parameters
    return {**{key: getattr(p, key) for key in PARAMETER_KEYS}, "stop": list(stops)}


MARK = "written by w4tui deploy"  # in the first line of every Modelfile deploy writes


def written_by_us(path: Path) -> bool:
    """An existing Modelfile that an earlier deploy wrote (so a new deploy may replace it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return MARK in fh.readline()
    except OSError:
        return False


def render(
    model: str,
    gguf: Path,
    template: str,
    system: str,
    params: dict[str, object],
    quantize: str | None = None,
    template_from: str = "",
    filename: str = "Modelfile",
) -> str:
    """Modelfile text that Ollama's parser reads back to exactly these values (parser/parser.go: the
    quotes around a value are stripped, nothing else is unescaped). ValueError for a value no quoting
    can carry (core/ollama/modelfile.py quote)."""
    create = f"ollama create {model} -f {filename}"
    lines = [
        f"# {model}, {MARK}. Recreate it by hand with:",
        f"#   {create}" + (f" --quantize {quantize}" if quantize else ""),
    ]
    if template_from:
        lines.append(f"# TEMPLATE and stop tokens from: {template_from}")
    lines += [f"FROM {_quote(str(gguf.resolve()), 'FROM')}", f"TEMPLATE {_quote(template, 'TEMPLATE')}"]
    if system:
        lines.append(f"SYSTEM {_quote(system, 'SYSTEM')}")
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {_quote(_plain(item), f'PARAMETER {key}')}")
    return "\n".join(lines) + "\n"


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quote(text: str, what: str) -> str:
    try:
        return ollama_modelfile.quote(text)
    except ValueError as exc:
        raise ValueError(f"the {what} value: {exc}") from None
