"""Which GGUF tensor each Hugging Face tensor becomes: its name (gguf's TensorNameMap), its type and
byte size, and how a row chunk of it is encoded. Types follow llama.cpp's converter: vectors (norms,
biases) stay F32, Q8_0 falls back to F16 for rows that are not whole 32-value blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from core.errors import StageError
from stages.quant import ggml
from stages.weights.halfprec import convert, to_f32
from stages.weights.safetensors import TensorRef, row_chunks

Q = gguf.GGMLQuantizationType
OUTTYPE_QTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
SAME_AS = {Q.F32: "F32", Q.F16: "F16", Q.BF16: "BF16"}  # GGUF types that are plain arrays
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass(frozen=True)
class TensorPlan:
    ref: TensorRef  # where the data comes from
    name: str  # GGUF name, e.g. blk.0.attn_q.weight
    qtype: gguf.GGMLQuantizationType
    # one-pass quantization: the tensor's type in our F16 file; its rows are rounded to it first and
    # quantized from there with ggml, as llama-quantize reads that file (None: converter types)
    stored: gguf.GGMLQuantizationType | None = None

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.ref.shape)) // block * size

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """The shape GGUFWriter.add_tensor_info wants with np_dtype: bytes per row for block types."""
        if self.qtype in (Q.F32, Q.F16):
            return self.ref.shape
        return tuple(gguf.quant_shape_to_byte_shape(self.ref.shape, self.qtype))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype({Q.F32: np.float32, Q.F16: np.float16}.get(self.qtype, np.uint8))

    def chunks(self) -> Iterator[tuple[int, int]]:
        return row_chunks(self.ref)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """A row chunk, raw in the source dtype (stages.weights.halfprec), in this tensor's GGUF encoding."""
        if self.stored is not None:
            kept = convert(raw, self.ref.dtype, SAME_AS[self.stored])  # the F16 file's values
            if self.qtype == self.stored:
                return kept  # llama-quantize copies what it does not quantize
            return ggml.quantize_rows(self.qtype, to_f32(kept, SAME_AS[self.stored]), self.ref.shape[-1])
        if self.qtype in SAME_AS:
            return convert(raw, self.ref.dtype, SAME_AS[self.qtype])
        # Q8_0 exactly as llama.cpp's converter computes it
        return gguf.quants.quantize(to_f32(raw, self.ref.dtype), self.qtype)


def tensor_type(shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    qtype = OUTTYPE_QTYPES[outtype]
    if len(shape) < 2 or qtype == Q.F32:
        return Q.F32
    if qtype == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return qtype


def plan_tensors(
    refs: list[TensorRef], arch: gguf.MODEL_ARCH, config: dict, outtype: str, model_dir: Path
) -> list[TensorPlan]:
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    plan = []
    for ref in refs:
        name = names.get_name(ref.name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise StageError(
                f"{ref.file}: tensor {ref.name} has no GGUF name for {gguf.MODEL_ARCH_NAMES[arch]}",
                hint="use --converter llama.cpp for this model",
            )
        plan.append(TensorPlan(ref, name, tensor_type(ref.shape, outtype)))
    return plan
