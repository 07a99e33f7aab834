"""llama-quantize's command line, served by the llama_cpp Python binding (for machines without the program).

    python -m stages.quant.llama_quantize INPUT.gguf OUTPUT.gguf TYPE [NTHREADS]

The quantize stage runs it as a child process exactly as it runs llama-quantize: llama.cpp prints the
same per-tensor lines ("[  12/ 339] blk.0.attn_q.weight ...") either way, so one parser follows both,
and Ctrl-C stops the child instead of waiting for a C call that cannot be interrupted.
"""

from __future__ import annotations

import ctypes
import sys

# The quantize stage's types, and the others the eval stage compares (w4tui.config.EVAL_TYPES).
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
    import llama_cpp  # also installs the binding's logger, which prints llama.cpp's lines to stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args[2].upper()}")
    if len(args) == 4:
        params.nthread = int(args[3])
    rc = llama_cpp.llama_model_quantize(args[0].encode(), args[1].encode(), ctypes.byref(params))
    if rc != 0:
        print(f"error: llama_model_quantize failed with code {rc}", file=sys.stderr)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
