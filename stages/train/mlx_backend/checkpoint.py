"""mlx checkpoints, in the torch backend's directory layout (``checkpoints/step-<N>/``, named only when
complete, the newest two kept): the LoRA weights in PEFT's names and shapes, the optimizer state as
safetensors, and ``state.json`` (step, epoch, position in the epoch's batch order, counters). No RNG
file: the loop reseeds from (seed, step), see loop.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from safetensors.numpy import load_file, save_file

from core.errors import StageError
from core.fsutil import atomic_path, remove_stale_partials
from stages.train.checkpoint import KEEP, TrainState, checkpoint_dir, read_state
from stages.train.mlx_backend.model import peft_tensors, set_peft_tensors

OPTIMIZER = "optimizer.safetensors"


def save(output: Path, state: TrainState, model, optimizer) -> Path:
    target = checkpoint_dir(output, state.step)
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        save_file(peft_tensors(model), str(tmp / "adapter_model.safetensors"))
        mx.save_safetensors(str(tmp / OPTIMIZER), dict(tree_flatten(optimizer.state)))
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1) + "\n")
    remove_stale_partials(output / "checkpoints")
    for old in sorted((output / "checkpoints").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


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
