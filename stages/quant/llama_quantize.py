"""llama-quantize's command line, served by the llama_cpp Python binding (for machines without the program).

    python -m stages.quant.llama_quantize INPUT.gguf OUTPUT.gguf TYPE [NTHREADS]

The quantize stage runs it as a child process exactly as it runs llama-quantize: llama.cpp prints the
same per-tensor lines ("[  12/ 339] blk.0.attn_q.weight ...") either way, so one parser follows both,
and Ctrl-C stops the child instead of waiting for a C call that cannot be interrupted.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

# The quantize stage's types, and the others the eval stage compares (core.config.EVAL_TYPES).
TYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q5_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--imatrix" in args:
        print("error: the llama_cpp binding cannot load an importance matrix; install llama-quantize", file=sys.stderr)
        return 1
    if len(args) not in (3, 4) or args[2].upper() not in TYPES:
        print(
            f"usage: python -m stages.quant.llama_quantize INPUT OUTPUT {{{','.join(TYPES)}}} [NTHREADS]",
            file=sys.stderr,
        )
        return 1
    _exit_with_parent()
    import llama_cpp  # also installs the binding's logger, which prints llama.cpp's lines to stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args[2].upper()}")
    if len(args) == 4:
        params.nthread = int(args[3])
    rc = llama_cpp.llama_model_quantize(args[0].encode(), args[1].encode(), ctypes.byref(params))
    if rc != 0:
        print(f"error: llama_model_quantize failed with code {rc}", file=sys.stderr)
    return 1 if rc else 0


def _exit_with_parent() -> None:
    """The quantize stage holds our stdin open: EOF means it is gone (even by kill -9), and then so is the
    output's partial directory we write into, so stop instead of finishing a file nobody will keep."""
    if sys.stdin is None or sys.stdin.isatty():
        return

    def watch() -> None:
        while os.read(0, 4096):  # the raw fd: a buffered read would hold a lock at interpreter exit
            pass
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
