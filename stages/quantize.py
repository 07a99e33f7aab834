"""Quantize an F16/BF16 GGUF with llama.cpp (Q4_K_M by default).

    python -m stages.quantize --input model-f16.gguf --output model-Q4_K_M.gguf --type Q4_K_M

Backends, first found wins: [tools] llama_quantize, `llama-quantize` (or the old `quantize`) on PATH,
the llama_cpp Python binding. With none, the F16 file is handed on for Ollama to quantize at deploy
([quantize] ollama_fallback), or the stage says how to get a quantizer.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from stages._stage import StageArgumentParser, StageError, main_for, stage_config
from w4tui.config import QUANT_TYPES
from w4tui.events import EventWriter
from w4tui.fsutil import atomic_path, check_free_space

BITS = {"Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q5_K_M": 5.7, "Q6_K": 6.6, "Q8_0": 8.5}  # bits per weight, for estimates
OLLAMA_TYPES = ("Q4_K_M", "Q4_K_S", "Q8_0")  # what Ollama's server-side quantization accepts
HOW_TO_GET = ("no llama.cpp quantizer found: install llama.cpp (`brew install llama.cpp` gives llama-quantize), "
              "or `pip install llama-cpp-python`, or set [tools] llama_quantize")


def build_parser() -> StageArgumentParser:
    q = stage_config().quantize
    p = StageArgumentParser(prog="quantize", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, type=Path, help="F16, BF16 or F32 GGUF")
    p.add_argument("--output", required=True, type=Path, help="the quantized .gguf to write")
    p.add_argument("--type", choices=QUANT_TYPES, default=q.type)
    p.add_argument("--imatrix", type=Path, default=Path(q.imatrix) if q.imatrix else None,
                   help="importance matrix for llama-quantize")
    p.add_argument("--backend", choices=["auto", "binary", "python"], default="auto")
    return p


def find_binary(configured: str) -> str | None:
    if configured:
        if not Path(configured).is_file():
            raise StageError(f"[tools] llama_quantize points at {configured}, which does not exist")
        return configured
    return shutil.which("llama-quantize") or shutil.which("quantize")


def has_binding() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def input_type(path: Path) -> str:
    """F32, F16, BF16 or "quantized", from the GGUF header."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).fields.get("general.file_type")
    except (ValueError, OSError) as exc:
        raise StageError(f"{path}: not a readable GGUF file ({exc})") from None
    return {0: "F32", 1: "F16", 32: "BF16"}.get(field.contents() if field else 1, "quantized")


def body(args, events: EventWriter) -> dict:
    if not args.input.is_file():
        raise StageError(f"{args.input}: no such file", hint="run the convert stage first")
    source_type = input_type(args.input)
    if source_type == "quantized":
        raise StageError(f"{args.input}: already quantized; quantize from the F16/BF16 GGUF")
    if args.imatrix and not args.imatrix.is_file():
        raise StageError(f"{args.imatrix}: importance matrix not found")
    config = stage_config()
    binary = find_binary(config.tools.llama_quantize) if args.backend in ("auto", "binary") else None
    binding = args.backend in ("auto", "python") and has_binding()
    if not binary and not binding:
        if config.quantize.ollama_fallback and args.type in OLLAMA_TYPES and args.backend == "auto":
            events.log(f"{HOW_TO_GET}; Ollama will quantize to {args.type} at deploy", level="warning")
            events.artifact(args.input.resolve(), "gguf", quant=source_type, defer_quantize=args.type,
                            parent=str(args.input.resolve()))
            return {"deferred_to_ollama": args.type}
        raise StageError(HOW_TO_GET)
    if args.imatrix and not binary:
        raise StageError("an importance matrix needs the llama-quantize program; the Python binding cannot pass one")
    size = args.input.stat().st_size
    expected = int(size * BITS[args.type] / 16)
    check_free_space(args.output.parent, expected + (64 << 20), "the quantized GGUF")
    with atomic_path(args.output) as tmp:
        if binary:
            _run_binary(binary, args, tmp, events)
        else:
            _run_binding(args, tmp, expected, events)
    out_size = args.output.stat().st_size
    events.artifact(args.output.resolve(), "gguf", quant=args.type, parent=str(args.input.resolve()), bytes=out_size,
                    backend="llama-quantize" if binary else "llama_cpp")
    return {"bytes": out_size, "ratio": round(size / out_size, 2), "backend": "binary" if binary else "python"}


def _run_binary(binary: str, args, tmp: Path, events: EventWriter) -> None:
    cmd = [binary] + (["--imatrix", str(args.imatrix)] if args.imatrix else []) + [str(args.input), str(tmp), args.type]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in proc.stdout:
        sys.stdout.write(line)  # the run's output.log keeps llama-quantize's own report
        if m := re.match(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)", line):
            events.progress(int(m.group(1)), int(m.group(2)), "tensors", message=m.group(3))
    if proc.wait() != 0 or not tmp.exists():
        raise StageError(f"llama-quantize failed (exit {proc.returncode}); its output is in the run's output.log")


def _run_binding(args, tmp: Path, expected: int, events: EventWriter) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args.type}")
    done = threading.Event()

    def watch() -> None:  # the binding reports nothing while it works: the output's growth is the progress
        while not done.wait(0.5):
            written = tmp.stat().st_size if tmp.exists() else 0
            events.progress(min(written, expected), expected, "bytes")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rc = llama_cpp.llama_model_quantize(str(args.input).encode(), str(tmp).encode(), ctypes.byref(params))
    finally:
        done.set()
        watcher.join()
    if rc != 0 or not tmp.exists():
        raise StageError(f"llama.cpp could not quantize {args.input} to {args.type} (code {rc}); see output.log")
    events.progress(expected, expected, "bytes")


main = main_for("quantize", build_parser, body)

if __name__ == "__main__":
    sys.exit(main())
