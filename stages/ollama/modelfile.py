"""The Modelfile of a build: what deploy sends to /api/create, written out so that
`ollama create NAME -f FILE` reproduces the build by hand. Standard library only."""

from __future__ import annotations

from pathlib import Path

from w4tui.config import Config

# PARAMETER order as in the config file; stops come last, one line each.
PARAMETER_KEYS = ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx")


def parameters(config: Config, stops: list[str]) -> dict[str, object]:
    p = config.ollama.parameters
    return {**{key: getattr(p, key) for key in PARAMETER_KEYS}, "stop": list(stops)}


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
    """Modelfile text. Raises ValueError for text a Modelfile cannot hold (\"\"\" inside a block)."""
    for what, text in (("TEMPLATE", template), ("SYSTEM", system)):
        if '"""' in text:
            raise ValueError(f'the {what} contains """, which a Modelfile cannot quote')
    create = f"ollama create {model} -f {filename}"
    lines = [
        f"# {model}, written by w4tui deploy. Recreate it by hand with:",
        f"#   {create}" + (f" --quantize {quantize}" if quantize else ""),
    ]
    if template_from:
        lines.append(f"# TEMPLATE and stop tokens from: {template_from}")
    lines += [f"FROM {gguf.resolve()}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {_quote(item)}")
    return "\n".join(lines) + "\n"


def _quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
