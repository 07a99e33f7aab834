"""The mlx model a run trains: mlx-lm's loader and LoRA layers, mlx-lm's quantization for QLoRA, and
the adapter in PEFT's layout in both directions, so merge/convert/deploy read it as a torch one.

PEFT keeps ``lora_A.weight`` as (r, in) and ``lora_B.weight`` as (out, r) and scales by alpha/r;
mlx-lm's LoRALinear keeps ``lora_a`` as (in, r) and ``lora_b`` as (r, out) and scales by ``scale``:
the same numbers, transposed, with scale = alpha/r.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model, quantize_model

from core.errors import StageError

PEFT_PREFIX = "base_model.model."
GROUP_SIZE = 64  # mlx-lm's default affine group; layers whose width it does not divide stay unquantized


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    rslora: bool = False  # PEFT's use_rslora: alpha/sqrt(r)

    @property
    def scale(self) -> float:
        return self.alpha / (self.r**0.5 if self.rslora else self.r)


def precision_name(quantize_base: int, dtype) -> str:
    """What the run record and the Training pane say the frozen base was."""
    return f"{quantize_base}-bit" if quantize_base else {mx.float32: "float32", mx.bfloat16: "bfloat16"}[dtype]


def load_base(path: Path, quantize_base: int, dtype) -> nn.Module:
    """The base from the downloaded Hugging Face weights, quantized in memory (no second copy on disk)."""
    try:
        model, config = load_model(path, lazy=True)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise StageError(
            f"{path}: mlx-lm cannot load this model: {str(exc).splitlines()[0]}",
            hint="train it with --backend torch",
        ) from None
    # The base's own dtype (bf16) on Metal; float32 on the CPU, as the torch backend does there.
    model.apply(lambda a: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a)
    if quantize_base:
        model, _ = quantize_model(model, config, group_size=GROUP_SIZE, bits=quantize_base)
    mx.eval(model.parameters())
    model.freeze()
    return model


def add_lora(model: nn.Module, spec: LoraSpec) -> None:
    """LoRA on every layer's target projections (PEFT's target_modules: the last name of each module)."""
    keys = {
        name
        for layer in model.layers
        for name, module in layer.named_modules()
        if name.rsplit(".", 1)[-1] in spec.target_modules and isinstance(module, (nn.Linear, nn.QuantizedLinear))
    }
    found = {k.rsplit(".", 1)[-1] for k in keys}
    if missing := [m for m in spec.target_modules if m not in found]:
        raise StageError(
            f"target modules not in this model: {', '.join(missing)}",
            hint="check [train] target_modules (Qwen2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)",
        )
    config = {"rank": spec.r, "scale": spec.scale, "dropout": spec.dropout, "keys": keys}
    linear_to_lora_layers(model, len(model.layers), config)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def peft_tensors(model: nn.Module) -> dict[str, np.ndarray]:
    """The LoRA weights under PEFT's names and shapes, float32."""
    out = {}
    for name, layer in lora_layers(model).items():
        key = f"{PEFT_PREFIX}{name}"
        out[f"{key}.lora_A.weight"] = np.array(layer.lora_a.astype(mx.float32)).T.copy()
        out[f"{key}.lora_B.weight"] = np.array(layer.lora_b.astype(mx.float32)).T.copy()
    return out


def set_peft_tensors(model: nn.Module, tensors: dict[str, np.ndarray], where: Path) -> None:
    """Load PEFT-named LoRA weights into the model's LoRA layers; any that do not fit are named."""
    layers = lora_layers(model)
    seen = set()
    for key, value in tensors.items():
        module, _, kind = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        layer = layers.get(module)
        if layer is None or kind not in ("A.weight", "B.weight"):
            raise StageError(f"{where}: {key} has no LoRA layer in this model", hint="an adapter of another base?")
        attr = "lora_a" if kind == "A.weight" else "lora_b"
        current = getattr(layer, attr)
        if tuple(value.T.shape) != tuple(current.shape):
            raise StageError(
                f"{where}: {key} is {list(value.shape)} but this model's is {list(current.T.shape)}",
                hint="an adapter of another base, or of another lora_r",
            )
        setattr(layer, attr, mx.array(np.ascontiguousarray(value.T)).astype(current.dtype))
        seen.add((module, attr))
    if missing := sorted(f"{m}.{a}" for m in layers for a in ("lora_a", "lora_b") if (m, a) not in seen):
        raise StageError(f"{where}: no weights for {missing[0]} (and {len(missing) - 1} more)")


def trainable(model: nn.Module) -> dict:
    return dict(tree_flatten(model.trainable_parameters()))


def hidden_states(model: nn.Module, ids: mx.array, mask: mx.array) -> mx.array:
    """The last hidden states through mlx-lm's own model, with ``mask`` (block-causal: each packed
    sample attends only to itself) handed to every layer by a "cache" that supplies nothing else.
    Positions run on across a packed row; under the block mask RoPE sees only distances inside a
    sample, so this equals restarting them per sample as the torch backend does."""
    return model.model(ids, cache=[_MaskOnly(mask) for _ in model.model.layers])


def project(model: nn.Module, hidden: mx.array) -> mx.array:
    if model.args.tie_word_embeddings:
        return model.model.embed_tokens.as_linear(hidden)
    return model.lm_head(hidden)


class _MaskOnly:
    """What mlx-lm's attention asks of a cache, for a whole sequence at once: offset 0, keys and values
    unchanged, and our mask."""

    offset = 0

    def __init__(self, mask: mx.array) -> None:
        self.mask = mask

    def update_and_fetch(self, keys, values):
        return keys, values

    def make_mask(self, n, return_array=False, window_size=None):
        return self.mask
