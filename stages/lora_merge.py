"""PEFT LoRA adapters, merged one weight (one row chunk) at a time with PEFT's semantics:

    W' = W + scale · B·A      scale = alpha / r   (alpha / √r with use_rslora)

``fan_in_fan_out`` adapters (Conv1D-style weights stored transposed) add (B·A)ᵀ, ``rank_pattern`` and
``alpha_pattern`` override r and alpha per module, ``modules_to_save`` replace whole tensors.
The delta is computed in float32, rounded to the adapter's dtype, added and rounded once to the base
dtype, as PEFT's ``merge_and_unload`` does, so the result equals PEFT's (up to matmul order).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stages._stage import StageError
from stages.safetensors_stream import TensorRef, f32_to_bf16, bf16_to_f32, read_rows, scan

PREFIX = "base_model.model."


@dataclass
class LoraPair:
    a: np.ndarray  # (r, in) float32
    b: np.ndarray  # (out, r) float32
    scale: float
    fan_in_fan_out: bool
    dtype: str  # the adapter's own dtype: PEFT rounds the delta to it before adding


class Adapter:
    def __init__(self, path: Path) -> None:
        self.path = path
        config_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
        if not config_file.exists() or not weights.exists():
            raise StageError(f"{path}: not a PEFT adapter (needs adapter_config.json and adapter_model.safetensors)")
        self.config = json.loads(config_file.read_text())
        if self.config.get("peft_type", "LORA") != "LORA":
            raise StageError(f"{path}: a {self.config['peft_type']} adapter; only LoRA can be merged")
        if self.config.get("use_dora"):
            raise StageError(f"{path}: DoRA adapters are not supported by the streaming merge")
        self.pairs: dict[str, LoraPair] = {}
        self.replacements: dict[str, TensorRef] = {}
        refs = {r.name: r for r in scan(weights)}
        with open(weights, "rb") as fh:
            for name, ref in refs.items():
                if ".lora_A." in name:
                    module = name.split(".lora_A.")[0]
                    b_ref = refs.get(name.replace(".lora_A.", ".lora_B."))
                    if b_ref is None:
                        raise StageError(f"{weights}: {name} has no matching lora_B")
                    a, b = read_rows(ref, fh, 0, ref.rows), read_rows(b_ref, fh, 0, b_ref.rows)
                    self.pairs[_base_name(module) + ".weight"] = LoraPair(
                        a, b, self._scale(module, a.shape[0]), bool(self.config.get("fan_in_fan_out")), ref.dtype)
                elif ".lora_" not in name:
                    self.replacements[_base_name(name.replace(".modules_to_save.default", ""))] = ref

    def _scale(self, module: str, rank: int) -> float:
        r = _pattern(self.config.get("rank_pattern") or {}, module, self.config.get("r", rank))
        alpha = _pattern(self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", r))
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    def check_fits(self, tensors: dict[str, TensorRef]) -> None:
        """Every adapted weight must exist in the base with the shape the adapter implies."""
        for name, pair in self.pairs.items():
            ref = tensors.get(name)
            if ref is None:
                raise StageError(f"adapter {self.path} adapts {name}, which the base model does not have",
                                 hint="was it trained on another base model?")
            expected = (pair.b.shape[0], pair.a.shape[1])
            if pair.fan_in_fan_out:
                expected = expected[::-1]
            if tuple(ref.shape) != expected:
                raise StageError(f"adapter does not fit the base: {name} is {list(ref.shape)} in the base but "
                                 f"{list(expected)} in {self.path}", hint="was it trained on another base model?")
        for name, ref in self.replacements.items():
            if name not in tensors or tuple(tensors[name].shape) != tuple(ref.shape):
                base = list(tensors[name].shape) if name in tensors else "missing"
                raise StageError(f"adapter does not fit the base: {name} is {base} in the base but "
                                 f"{list(ref.shape)} in {self.path}")


def _base_name(module: str) -> str:
    return module[len(PREFIX):] if module.startswith(PREFIX) else module


def _pattern(patterns: dict, module: str, default):
    """PEFT matches pattern keys against the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", _base_name(module)):
            return value
    return default


def merged_rows(adapter: Adapter | None, ref: TensorRef, fh: BinaryIO, start: int, stop: int,
                adapter_fh: BinaryIO | None = None) -> np.ndarray:
    """Rows [start, stop) of a base tensor with the adapter merged in, as float32 holding values of the
    base dtype (bf16 rows hold exactly representable bf16 values)."""
    if adapter is not None and ref.name in adapter.replacements:
        repl = adapter.replacements[ref.name]
        with open(repl.file, "rb") as rfh:
            return _as_base_dtype(read_rows(repl, rfh, start, stop), ref.dtype)
    rows = read_rows(ref, fh, start, stop)
    pair = adapter.pairs.get(ref.name) if adapter is not None else None
    if pair is None:
        return rows
    if pair.fan_in_fan_out:
        delta = (pair.b @ pair.a[:, start:stop]).T * pair.scale
    else:
        delta = (pair.b[start:stop] @ pair.a) * pair.scale
    # PEFT: the delta comes out in the adapter's dtype (fp32 for adapters trained here); the in-place
    # add then computes in the wider type and rounds once to the weight's dtype.
    return _as_base_dtype(rows + _as_base_dtype(delta.astype(np.float32), pair.dtype), ref.dtype)


def _as_base_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(f32_to_bf16(values))
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float32)
    return values.astype(np.float32)
