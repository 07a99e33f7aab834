"""PEFT LoRA adapters, merged one weight (one row chunk) at a time with PEFT's semantics:

    W' = W + scale · B·A      scale = alpha / r   (alpha / √r with use_rslora)

``fan_in_fan_out`` adapters (Conv1D-style weights stored transposed) and embedding LoRA
(``lora_embedding_A/B``) add (B·A)ᵀ; ``rank_pattern``/``alpha_pattern`` override r and alpha per module;
``lora_bias`` adds scale · lora_B.bias to the base bias; whole tensors saved with the adapter
(``modules_to_save``, ``bias="all"``, ``save_embedding_layers``) replace the base's before the delta is added.
The delta is computed in float32 (PeftModel.from_pretrained upcasts bf16/fp16 adapters to float32) by
torch's own matmul on the whole weight, as PEFT's ``get_delta_weight`` does, then added in float32 and
rounded once to the base dtype, as ``merge_and_unload`` does: the result equals PEFT's bit for bit. (numpy's
BLAS, or a matmul per row chunk, sums in another order on some CPUs and moves values by one bf16 ulp.)
That costs one adapted weight's float32 delta in memory while its chunks are written: 271 MB for a 7B's
largest projection (18944 x 3584), 2.2 GB if the embeddings are adapted.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.errors import StageError
from stages.weights.halfprec import from_f32, round_to
from stages.weights.safetensors import TensorRef, read_raw, read_rows, scan

PREFIX = "base_model.model."
# Wrapper names PEFT puts into saved keys; the base model's tensor has the name without them.
WRAPPERS = re.compile(r"\.(base_layer|modules_to_save\.default|modules_to_save|original_module)(?=\.)")


@dataclass
class LoraPair:
    """One adapted weight. A and B stay on disk: each row chunk reads what it needs (all of A, its rows
    of B), so the adapter's size does not add to the merge's memory."""

    a: TensorRef  # (r, in)
    b: TensorRef  # (out, r)
    scale: float
    transposed: bool  # the delta is (B·A)ᵀ: fan_in_fan_out weights and embeddings
    embedding: bool = False  # PEFT's Embedding.merge also rounds the delta to the base dtype first
    # The whole delta, made by the first chunk that needs it and dropped once every row was served.
    _delta: np.ndarray | None = field(default=None, init=False, repr=False)
    _served: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of the base weight this pair fits."""
        out, inp = self.b.shape[0], self.a.shape[1]
        return (inp, out) if self.transposed else (out, inp)

    def delta(self, fh: BinaryIO, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of scale · B·A (transposed where PEFT transposes), float32. Each row is
        asked for once (the chunks tile the weight), so the whole delta is freed after its last chunk."""
        with self._lock:
            if self._delta is None:
                self._delta = self._whole(fh)
            rows = self._delta[start:stop].copy()
            self._served += stop - start
            if self._served >= self.shape[0]:
                self._delta, self._served = None, 0
        return rows

    def _whole(self, fh: BinaryIO) -> np.ndarray:
        """PEFT's get_delta_weight: transpose(B @ A, fan_in_fan_out) * scaling, in torch, whole."""
        import torch  # only an adapter merge needs it: convert without an adapter starts without torch

        a = torch.from_numpy(read_rows(self.a, fh, 0, self.a.rows))
        b = torch.from_numpy(read_rows(self.b, fh, 0, self.b.rows))
        product = b @ a
        return ((product.T if self.transposed else product) * self.scale).contiguous().numpy()


@dataclass
class BiasDelta:
    bias: TensorRef  # lora_B.bias
    scale: float

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bias.shape


class Adapter:
    """A PEFT LoRA adapter directory: what it changes in which base tensor (the data stays on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        config_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
        if not config_file.is_file():
            raise StageError(f"{path}: not a PEFT adapter (no adapter_config.json)", hint="check --adapter")
        if not weights.is_file():
            found = "adapter_model.bin (pickle) found; " if (path / "adapter_model.bin").exists() else ""
            raise StageError(
                f"{path}: no adapter_model.safetensors; {found}the merge reads safetensors only",
                hint="save the adapter with save_pretrained(..., safe_serialization=True)",
            )
        try:
            self.config = json.loads(config_file.read_text())
        except (ValueError, RecursionError):
            raise StageError(f"{config_file}: not valid JSON", hint="the adapter is damaged") from None
        if not isinstance(self.config, dict):
            raise StageError(f"{config_file}: not a JSON object", hint="the adapter is damaged")
        if self.config.get("peft_type", "LORA") != "LORA":
            raise StageError(f"{path}: a {self.config['peft_type']} adapter; only LoRA can be merged")
        if self.config.get("use_dora"):
            raise StageError(f"{path}: DoRA adapters are not supported by the streaming merge")
        self.pairs: dict[str, LoraPair] = {}  # base weight name -> its LoRA pair
        self.bias_deltas: dict[str, BiasDelta] = {}  # base bias name -> lora_B.bias (lora_bias=True)
        self.replacements: dict[str, TensorRef] = {}  # base tensor name -> tensor saved in the adapter
        self.fh = open(weights, "rb")  # read chunk by chunk, from several threads (pread)
        self._load(weights)

    def _load(self, weights: Path) -> None:
        refs = {r.name: r for r in scan(weights)}
        fan_in_fan_out = bool(self.config.get("fan_in_fan_out"))
        for name, ref in refs.items():
            module, kind = _split_key(name)
            if kind in ("lora_A.weight", "lora_embedding_A"):
                b_key = name.replace("lora_A.", "lora_B.").replace("lora_embedding_A", "lora_embedding_B")
                if b_key not in refs:
                    raise StageError(f"{weights}: {name} has no matching {b_key}", hint="the adapter is damaged")
                b = refs[b_key]
                if len(ref.shape) != 2 or len(b.shape) != 2 or ref.shape[0] != b.shape[1]:
                    raise StageError(
                        f"{weights}: {name} is {list(ref.shape)} but {b_key} is {list(b.shape)}",
                        hint="the adapter is damaged",
                    )
                embedding = kind == "lora_embedding_A"
                self.pairs[module + ".weight"] = LoraPair(
                    ref, b, self._scale(module), fan_in_fan_out or embedding, embedding
                )
            elif kind == "lora_B.bias":
                self.bias_deltas[module + ".bias"] = BiasDelta(ref, self._scale(module))
            elif kind in ("lora_B.weight", "lora_embedding_B"):
                continue  # read with its A
            elif kind:
                raise StageError(
                    f"{weights}: {name}: adapter tensor kind {kind} is not supported by the merge",
                    hint="merge it with PEFT's merge_and_unload instead",
                )
            else:
                self.replacements[module] = ref

    def _scale(self, module: str) -> float:
        r = _pattern(self.config.get("rank_pattern") or {}, module, self.config.get("r", 8))
        alpha = _pattern(self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", r))
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def check_fits(self, tensors: dict[str, TensorRef]) -> None:
        """Every tensor the adapter touches must exist in the base with the shape the adapter implies."""
        wanted: list[tuple[str, tuple[int, ...]]] = [(n, p.shape) for n, p in self.pairs.items()]
        wanted += [(n, d.shape) for n, d in self.bias_deltas.items()]
        wanted += [(n, tuple(r.shape)) for n, r in self.replacements.items()]
        for name, shape in wanted:
            ref = tensors.get(name)
            if ref is None:
                raise StageError(
                    f"adapter {self.path} changes {name}, which the base model does not have",
                    hint="was it trained on another base model?",
                )
            if tuple(ref.shape) != tuple(shape):
                raise StageError(
                    f"adapter does not fit the base: {name} is {list(ref.shape)} in the base but "
                    f"{list(shape)} in {self.path}",
                    hint="was it trained on another base model?",
                )

    def touches(self, name: str) -> bool:
        return name in self.pairs or name in self.bias_deltas or name in self.replacements


def _split_key(key: str) -> tuple[str, str]:
    """'base_model.model.X.q_proj.lora_A.weight' -> ('X.q_proj', 'lora_A.weight');
    a plain tensor 'base_model.model.X.q_proj.base_layer.bias' -> ('X.q_proj.bias', '')."""
    key = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    match = re.search(r"\.(lora_\w+(?:\.\w+)?)$", key)
    if match:
        return key[: match.start()], match.group(1)
    return WRAPPERS.sub("", key), ""


def _pattern(patterns: dict, module: str, default):
    """PEFT's get_pattern_key: the first key that matches the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def merged_rows(adapter: Adapter | None, ref: TensorRef, fh: BinaryIO, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a base tensor with the adapter merged in, as a raw array of the base's dtype
    (stages.weights.halfprec: bf16 as uint16 bits). Safe to call from several threads."""
    if adapter is None or not adapter.touches(ref.name):
        return read_raw(ref, fh, start, stop)
    if ref.name in adapter.replacements:
        repl = adapter.replacements[ref.name]
        rows = round_to(read_rows(repl, adapter.fh, start, stop), ref.dtype)
    else:
        rows = read_rows(ref, fh, start, stop)
    if (pair := adapter.pairs.get(ref.name)) is not None:
        delta = pair.delta(adapter.fh, start, stop)
        if pair.embedding:  # PEFT's Embedding.merge adds delta.to(weight dtype): two roundings
            delta = round_to(delta, ref.dtype)
    elif (bias := adapter.bias_deltas.get(ref.name)) is not None:
        delta = read_rows(bias.bias, adapter.fh, start, stop) * np.float32(bias.scale)
    else:
        return from_f32(rows, ref.dtype)
    rows = rows + delta if not rows.flags.writeable else np.add(rows, delta, out=rows)
    return from_f32(rows, ref.dtype)
