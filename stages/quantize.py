"""Quantize an F16/BF16 GGUF with llama.cpp (Q4_K_M by default; Q4_K_S, Q5_K_M, Q6_K, Q8_0).

    python -m stages.quantize --input model-f16.gguf --output model-Q4_K_M.gguf --type Q4_K_M

Backends, first found wins: [tools] llama_quantize, `llama-quantize` (or the old `quantize`) on PATH,
the llama_cpp Python binding (run as a child process with llama-quantize's command line). With none,
the F16 file is handed on for Ollama to quantize at deploy ([quantize] ollama_fallback; Ollama makes
Q4_K_M, Q4_K_S and Q8_0), or the stage says in one line how to get a quantizer.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core import parsers
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import DiskSpaceError, atomic_path, check_free_space
from core.gguf_header import UNQUANTIZED, NotGGUF, read_info, written_by_w4tui
from core.parsers import StageArgumentParser
from core.units import size
from stages.common.outputs import check_output
from stages.common.stage import run_main, stage_config

BITS = {"Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q5_K_M": 5.7, "Q6_K": 6.6, "Q8_0": 8.5}  # bits per weight, for estimates
OLLAMA_TYPES = ("Q4_K_M", "Q4_K_S", "Q8_0")  # what Ollama's server-side quantization makes
HOW_TO_GET = (
    "no llama.cpp quantizer found: install llama.cpp (`brew install llama.cpp` gives llama-quantize), "
    "or `pip install llama-cpp-python`, or set [tools] llama_quantize"
)
TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


@dataclass(frozen=True)
class Backend:
    name: str  # "llama-quantize" or "llama_cpp"
    command: list[str]


def build_parser() -> StageArgumentParser:
    return parsers.quantize(stage_config())


def has_binding() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def find_program(configured: str) -> str | None:
    """[tools] llama_quantize (a path or a name on PATH), else llama-quantize or the old `quantize` on PATH."""
    if configured:
        found = shutil.which(configured)
        if not found:
            raise StageError(
                f"[tools] llama_quantize points at {configured}, which is not an executable file",
                hint='fix the path, or set it to "" to look on PATH',
            )
        return found
    if found := shutil.which("llama-quantize"):
        return found
    old = shutil.which("quantize")  # a generic name: only llama.cpp's own counts
    return old if old and _is_llama_quantize(old) else None


def _is_llama_quantize(program: str) -> bool:
    try:
        proc = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=10, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return False
    return "allow-requantize" in proc.stdout + proc.stderr


def find_backend(configured: str, choice: str = "auto") -> Backend | None:
    if choice in ("auto", "llama-quantize"):
        if program := find_program(configured):
            return Backend("llama-quantize", [program])
        if choice == "llama-quantize":
            raise StageError(
                "--backend llama-quantize: llama-quantize is not on PATH and [tools] llama_quantize is empty",
                hint=HOW_TO_GET.split(": ", 1)[1],
            )
    if choice in ("auto", "llama_cpp") and has_binding():
        return Backend("llama_cpp", [sys.executable, "-m", "stages.quant.llama_quantize"])
    if choice == "llama_cpp":
        raise StageError(
            "--backend llama_cpp: the llama_cpp Python binding is not installed", hint="pip install llama-cpp-python"
        )
    return None


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    info = _check_input(args)
    if args.imatrix and not args.imatrix.is_file():
        raise StageError(f"{args.imatrix}: importance matrix not found", hint="fix --imatrix / [quantize] imatrix")
    backend = None if args.backend == "ollama" else find_backend(config.tools.llama_quantize, args.backend)
    if backend is None:
        return _defer(args, info.file_type, config.quantize.ollama_fallback or args.backend == "ollama", events)
    if args.imatrix and backend.name != "llama-quantize":
        raise StageError(
            "an importance matrix needs the llama-quantize program; the llama_cpp binding cannot load one",
            hint="install llama.cpp, or clear [quantize] imatrix",
        )
    weights = sum(_count(shape) for _, shape, _ in info.tensors if len(shape) > 1)
    other = args.input.stat().st_size - weights * (4 if info.file_type == "F32" else 2)  # header, norms, biases
    expected = int(weights * BITS[args.type] / 8) + max(other, 0)
    check_free_space(args.output.parent, int(expected * 1.1) + (64 << 20), "the quantized GGUF")
    events.log(
        f"quantizing {args.input.name} ({info.file_type}, {len(info.tensors)} tensors) to {args.type} "
        f"with {backend.name}"
    )
    with atomic_path(args.output) as tmp:
        try:
            fallbacks = _run(backend, args, tmp, len(info.tensors), events)
            made = read_info(tmp, tensors=False).file_type
        except (StageError, NotGGUF) as exc:
            _name_a_full_disk(tmp, args.output, exc)
            if isinstance(exc, NotGGUF):
                raise StageError(f"{backend.name} wrote no valid GGUF: {exc}") from None
            raise
        if made != args.type:
            raise StageError(f"{backend.name} wrote a {made} file, not {args.type}")
    size_in, size_out = args.input.stat().st_size, args.output.stat().st_size
    events.artifact(
        args.output.resolve(),
        "gguf",
        parent=str(args.input.resolve()),
        quant=args.type,
        bytes=size_out,
        backend=backend.name,
        fallback_tensors=fallbacks,
        imatrix=str(args.imatrix.resolve()) if args.imatrix else None,
    )
    events.log(f"{size(size_in)} -> {size(size_out)} ({size_in / size_out:.2f}x smaller)")
    return {
        "bytes": size_out,
        "ratio": round(size_in / size_out, 2),
        "backend": backend.name,
        "tensors": len(info.tensors),
        "fallback_tensors": fallbacks,
    }


def _check_input(args):
    check_output(args.output, "file", inputs=[args.input], own=written_by_w4tui, what="the quantized GGUF")
    if args.output.suffix != ".gguf":
        raise StageError(f"{args.output}: the output must end in .gguf")
    if not args.input.is_file():
        raise StageError(f"{args.input}: no such file", hint="run the convert stage first")
    if args.output.resolve() == args.input.resolve():
        raise StageError(f"{args.output}: the output must not overwrite the input")
    try:
        info = read_info(args.input)
    except NotGGUF as exc:
        raise StageError(f"{exc} (a readable GGUF file is needed)") from None
    if info.file_type not in UNQUANTIZED:
        raise StageError(
            f"{args.input}: already quantized ({info.file_type}); quantize from the F16/BF16 GGUF "
            "the convert stage wrote"
        )
    return info


def _defer(args, source_type: str, allowed: bool, events: EventWriter) -> dict:
    """No quantizer here: hand the unquantized file on; deploy asks Ollama to quantize it."""
    if not allowed:
        raise StageError(HOW_TO_GET, hint="or set [quantize] ollama_fallback = true to let Ollama quantize")
    if args.imatrix:
        raise StageError(f"{HOW_TO_GET}; Ollama cannot use an importance matrix", hint="or clear [quantize] imatrix")
    if args.type not in OLLAMA_TYPES:
        raise StageError(f"{HOW_TO_GET}; Ollama cannot make {args.type} itself (only {', '.join(OLLAMA_TYPES)})")
    events.log(f"{HOW_TO_GET}; Ollama will quantize to {args.type} at deploy", level="warning")
    events.artifact(
        args.input.resolve(),
        "gguf",
        parent=str(args.input.resolve()),
        quant=source_type,
        defer_quantize=args.type,
        bytes=args.input.stat().st_size,
    )
    return {"deferred_to_ollama": args.type}


def _run(backend: Backend, args, tmp: Path, total: int, events: EventWriter) -> int:
    """Run the quantizer; its per-tensor lines become progress events. Returns the fallback count."""
    command = backend.command + (["--imatrix", str(args.imatrix)] if args.imatrix else [])
    command += [str(args.input), str(tmp), args.type] + ([str(args.threads)] if args.threads > 0 else [])
    events.progress(0, total, "tensors")
    tail: deque[str] = deque(maxlen=20)
    fallbacks = 0
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )  # stdin: our child sees EOF when we die (stages.quant.llama_quantize)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)  # the run's output.log keeps llama.cpp's own report
            tail.append(line.strip())
            fallbacks += "falling back to" in line
            if m := TENSOR_LINE.match(line):
                events.progress(int(m.group(1)), int(m.group(2)), "tensors", message=m.group(3))
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # cancelled: stop the child too, the atomic output is thrown away
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.stdin.close()  # type: ignore[union-attr]
    if rc != 0 or not tmp.exists():
        reason = next(
            (t for t in reversed(tail) if re.search(r"error|failed|invalid", t, re.I)), tail[-1] if tail else ""
        )
        raise StageError(
            f"{backend.name} failed (exit {rc}): {reason[:200]}", hint="its output is in the run's output.log"
        )
    return fallbacks


def _name_a_full_disk(tmp: Path, output: Path, exc: Exception) -> None:
    """llama.cpp reports a full disk as a failed write (or writes a short file): say what it was."""
    free = shutil.disk_usage(tmp.parent).free
    if free < (1 << 20):
        raise DiskSpaceError(
            f"{output.parent}: disk full while writing {output.name} ({size(free)} free; "
            f"the quantizer said: {str(exc)[:120]}); the partial output was removed; free some "
            "space and run again"
        ) from None


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("quantize", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
