"""mlx checkpoints, in the layout both backends share (state.py: ``checkpoints/step-<N>/``, named only
when complete, the newest two kept): the LoRA weights in PEFT's names and shapes, the optimizer state as
safetensors, and ``state.json`` (step, epoch, position in the epoch's batch order, counters). No RNG
file: the loop reseeds from (seed, step), see loop.py."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from safetensors.numpy import load_file, save_file

from core.errors import StageError
from stages.train import state as layout
from stages.train.mlx_backend.model import peft_tensors, set_peft_tensors
from stages.train.state import TrainState, read_state

OPTIMIZER = "optimizer.safetensors"


def save(output: Path, state: TrainState, model, optimizer) -> Path:
    def fill(tmp: Path) -> None:
        save_file(peft_tensors(model), str(tmp / "adapter_model.safetensors"))
        mx.save_safetensors(str(tmp / OPTIMIZER), dict(tree_flatten(optimizer.state)))

    return layout.write(output, state, fill)


def load(path: Path, model, optimizer) -> TrainState:
    if not (path / OPTIMIZER).is_file():
        raise StageError(
            f"{path}: a checkpoint of the torch backend; cannot resume it exactly with mlx",
            hint="resume with --backend torch, or start from its adapter with --resume_from",
        )
    try:
        opt = mx.load(str(path / OPTIMIZER))
        weights = load_file(str(path / "adapter_model.safetensors"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise StageError(f"{path}: not a checkpoint that can be loaded ({str(exc).splitlines()[0][:160]})") from None
    set_peft_tensors(model, weights, path)
    optimizer.state = tree_unflatten(list(opt.items()))
    mx.eval(model.parameters(), optimizer.state)
    return read_state(path)
