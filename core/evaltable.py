"""The eval table (eval.json, written by the eval stage) as text: the CLI prints it, the TUI shows it.
Standard library only.

    type              size         ppl     Δppl   KL mean    KL p99   top-1 prompt t/s  gen t/s       s
    F16            45.0 MB   6163.8825   +0.00%   0.00000   0.00000  100.0%    11672.3    613.7       -
    Q4_K_M         23.0 MB   6205.8739   +0.68%   0.00465   0.04369   94.9%      403.7    126.1    28.9
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import units

VERSION = 1
HEAD = ("type", "size", "ppl", "Δppl", "KL mean", "KL p99", "top-1", "prompt t/s", "gen t/s", "s")
WIDTHS = (12, 9, 11, 8, 9, 9, 7, 10, 8, 7)


def read(path: str | Path) -> dict | None:
    """The eval document, or None when it is missing, unreadable or of another version."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (
        doc if isinstance(doc, dict) and doc.get("version") == VERSION and isinstance(doc.get("rows"), list) else None
    )


def build_stem(f16: str | Path) -> str:
    """The build's name: the F16 GGUF's file name without ``-f16.gguf`` (as the convert stage names it)."""
    stem = Path(f16).name.removesuffix(".gguf")
    for suffix in ("-f16", "-bf16", "-f32", "-F16", "-BF16", "-F32"):
        stem = stem.removesuffix(suffix)
    return stem


def eval_path(f16: str | Path) -> Path:
    """Where the eval of a build lives: beside its F16 GGUF, ``<build>-eval.json``."""
    return Path(f16).with_name(f"{build_stem(f16)}-eval.json")


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def kl_text(value: float | None) -> str:
    """KL divergences span decades (1e-6 for Q8_0 on a tiny model, 0.1 for Q2_K): small ones in e-notation."""
    if value is None:
        return "-"
    return f"{value:.5f}" if value == 0 or value >= 1e-3 else f"{value:.2e}"


def row_cells(row: dict, f16_ppl: float | None) -> tuple[str, ...]:
    ppl = row.get("ppl")
    delta = "-" if ppl is None or not f16_ppl or row.get("kind") != "gguf" else f"{(ppl / f16_ppl - 1) * 100:+.2f}%"
    top1 = row.get("top1")
    return (
        row["name"],
        units.size(row.get("bytes") or None),
        _num(ppl, ".4f"),
        delta,
        kl_text(row.get("kl_mean")),
        kl_text(row.get("kl_p99")),
        "-" if top1 is None else f"{top1 * 100:.1f}%",
        _num(row.get("prompt_tps"), ".1f"),
        _num(row.get("gen_tps"), ".1f"),
        _num(row.get("seconds"), ".1f"),
    )


def f16_ppl(doc: dict) -> float | None:
    return next((r.get("ppl") for r in doc["rows"] if r.get("reference")), None)


def format_table(doc: dict) -> list[str]:
    reference = f16_ppl(doc)
    lines = [_line(HEAD)]
    lines += [_line(row_cells(row, reference)) for row in doc["rows"]]
    data = doc.get("data", {})
    lines.append(
        f"{data.get('scored_tokens', '?')} scored tokens of {data.get('source', '?')}; "
        f"{doc.get('seconds', 0):.0f} s in all"
    )
    return lines


def _line(cells) -> str:
    return " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, WIDTHS))).rstrip()


def for_gguf(path: str | Path) -> Path:
    """The eval of the build a GGUF belongs to (its F16 or any quantized file): ``<build>-eval.json``."""
    stem = re.sub(r"-(f16|bf16|f32|q\d\w*)$", "", Path(path).name.removesuffix(".gguf"), flags=re.I)
    return Path(path).with_name(f"{stem}-eval.json")


def trade_off(doc: dict, width: int = 20) -> list[str]:
    """Size against quality at a glance: per GGUF row, its size as a bar (F16 full) and its KL divergence
    from F16 as a bar (the largest in the table full)."""
    rows = [r for r in doc["rows"] if r.get("kind") == "gguf"]
    biggest = max((r.get("bytes") or 0 for r in rows), default=0) or 1
    worst = max((r.get("kl_mean") or 0 for r in rows), default=0) or 1
    lines = []
    for r in rows:
        size = round(width * (r.get("bytes") or 0) / biggest)
        kl = round(width * (r.get("kl_mean") or 0) / worst)
        lines.append(
            f"{r['name']:<8} size {'█' * size}{'·' * (width - size)} {units.size(r.get('bytes') or None):>9}"
            f"   KL {'█' * kl}{'·' * (width - kl)} {kl_text(r.get('kl_mean') or 0)}"
        )
    return lines
