"""The text of the artifact "inspect" view."""

from __future__ import annotations

from core import units
from w4tui.ui.sources import fmt
from w4tui.ui.sources.artifacts import Artifact


def evaltable_hint(a: Artifact) -> str:
    return "e runs it again" if a.kind == "gguf" else "w4tui eval"


def describe_artifact(a: Artifact, now: float) -> str:
    lines = [
        f"path        {a.path}",
        f"kind        {a.kind}" + ("  (latest of its kind)" if a.latest else ""),
        f"size        {units.size(a.bytes)}",
        f"modified    {fmt.clock(a.modified, now)}",
    ]
    if a.parent:
        lines.append(f"made from   {a.parent}")
    if a.run_id:
        lines.append(f"by run      {a.run_id}")
    if a.step is not None:
        lines.append(f"step        {a.step}")
    if a.quant:
        lines.append(f"quant       {a.quant}")
    if a.deployed:
        lines.append(f"deployed as {', '.join(a.deployed)}")
    if a.verified is not None:
        lines.append(f"verified    {'passed' if a.verified else 'FAILED'}")
    if a.gguf is not None:
        g = a.gguf
        if g.error:
            lines.append(f"GGUF header unreadable: {g.error}")
        else:
            lines += [
                "",
                "GGUF header",
                f"  name            {g.name}",
                f"  architecture    {g.architecture}",
                f"  quantization    {g.quantization}",
                f"  tensors         {g.tensors}",
                f"  context length  {g.context_length or '?'}",
                f"  parameters      {g.parameters:,}",
            ]
    if a.eval:
        lines += ["", f"eval of the build ({evaltable_hint(a)})", *a.eval]
    if a.extra:
        lines += ["", "from its artifact event"] + [f"  {k:<14}  {v}" for k, v in a.extra]
    return "\n".join(lines)
