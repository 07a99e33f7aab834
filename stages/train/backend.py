"""Which trainer runs a training run: torch (PEFT, on CUDA/MPS/CPU) or mlx (mlx-lm's LoRA, QLoRA on a
4/8-bit base; Apple's fastest path). Both read the same data, write the same PEFT adapter and the same
events, so everything after training is the same whichever trained.

``auto`` picks mlx on Apple Silicon when it is installed, torch otherwise (core/train_backend.py, shared
with the app's pre-flight). Kept free of torch and mlx imports: the choice and its mistakes are known
before either loads.
"""

from __future__ import annotations

import sys

from core import train_backend
from core.errors import UsageError


def resolve(args) -> str:
    """Set ``args.backend`` to the one that runs and ``args.quantize_base`` to what it trains on; a
    quantized base asked of torch is refused (torch trains the base in its own precision)."""
    backend = train_backend.detect(args.backend)
    if backend == "torch":
        if args.quantize_base:  # only an explicit --quantize_base reaches here: [train]'s applies to mlx alone
            raise UsageError(
                f"--quantize_base {args.quantize_base} is for the mlx backend; torch trains a bf16/fp16/fp32 base",
                hint="drop --quantize_base, or add --backend mlx",
            )
        args.quantize_base = 0
    elif getattr(args, "gpus", 1) > 1 or getattr(args, "nnodes", 1) > 1:
        raise UsageError(
            f"--gpus {args.gpus} / --nnodes {args.nnodes} are for the torch backend (torchrun); mlx trains on one Mac",
            hint="add --backend torch, or drop --gpus/--nnodes",
        )
    elif args.quantize_base is None:
        from core.config import load_config

        args.quantize_base = load_config(None).train.quantize_base
    args.backend = backend
    return backend


def train(args, events) -> dict:
    if args.backend == "mlx":
        _without_torch()
        from stages.train.mlx_backend import run

        return run.train(args, events)
    from stages.train import torch_run  # torch and transformers only once the arguments are known to be good

    return torch_run.train(args, events)


def _without_torch() -> None:
    """mlx trains without torch, but transformers (mlx-lm loads it for the tokenizer) imports torch
    wherever it can find it: seconds and ~100 MB for nothing. None in sys.modules makes find_spec, and so
    transformers' is_torch_available(), answer that it is not there (a process that has it keeps it)."""
    sys.modules.setdefault("torch", None)
