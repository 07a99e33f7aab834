"""Read and write safetensors one bounded chunk at a time (numpy only, no mmap).

Plain ``pread`` reads keep the resident memory at the size of the chunks in flight however large the
model (a memory map would count every touched page of a 15 GB model as resident), and they are safe
to issue from several threads on one file. Arrays are "raw" (see stages.weights.halfprec: bf16 as uint16 bits).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.errors import StageError
from stages.weights.halfprec import to_f32

DTYPES = {"BF16": (np.uint16, 2), "F16": (np.float16, 2), "F32": (np.float32, 4)}
CHUNK_BYTES = 4 << 20  # rows are processed in chunks whose float32 working copy is about this size
MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class TensorRef:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elems(self) -> int:
        return int(np.prod(self.shape[1:]))  # 1 for vectors and scalars


def read_header(path: Path) -> tuple[dict, int]:
    """(header, data start). Raises StageError naming the file for anything truncated or corrupt."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise StageError(f"{path}: truncated safetensors file ({size} bytes)", hint="download it again")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER, size - 8):
            raise StageError(f"{path}: corrupt safetensors header (claims {length} bytes)", hint="download it again")
        try:
            header = json.loads(fh.read(length))
        except (ValueError, RecursionError):
            raise StageError(f"{path}: corrupt safetensors header (not JSON)", hint="download it again") from None
    return header, 8 + length


def scan(path: Path) -> list[TensorRef]:
    """The tensors of one safetensors file, each checked to lie inside the file (so truncation or a
    damaged header is found before anything is written)."""
    header, start = read_header(path)
    size = path.stat().st_size
    if not isinstance(header, dict):
        raise StageError(f"{path}: corrupt safetensors header (not an object)", hint="download it again")
    refs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, (begin, end), shape = info["dtype"], info["data_offsets"], tuple(int(d) for d in info["shape"])
        except (TypeError, KeyError, ValueError):
            raise StageError(f"{path}: corrupt safetensors header at tensor {name}", hint="download it again") from None
        if dtype not in DTYPES:
            raise StageError(f"{path}: tensor {name} has dtype {dtype}; supported: {', '.join(DTYPES)}")
        if begin < 0 or end - begin != int(np.prod(shape)) * DTYPES[dtype][1] or start + end > size:
            raise StageError(
                f"{path}: truncated or corrupt: tensor {name} lies outside the file ({size} bytes)",
                hint="download the model again",
            )
        refs.append(TensorRef(name, path, dtype, shape, start + begin, end - begin))
    refs.sort(key=lambda r: r.offset)
    _check_contiguous(path, refs, start, size)
    return refs


def _check_contiguous(path: Path, refs: list[TensorRef], start: int, size: int) -> None:
    """The tensors tile the data exactly: no overlap (two names for the same bytes), no gap, nothing after
    the last one, as the safetensors library itself requires of a file it writes or loads."""
    at = start
    for ref in refs:
        if ref.offset < at:
            raise StageError(
                f"{path}: corrupt: tensor {ref.name} overlaps the tensor before it", hint="download the model again"
            )
        if ref.offset > at:
            raise StageError(
                f"{path}: corrupt: a gap of {ref.offset - at} bytes before tensor {ref.name}",
                hint="download the model again",
            )
        at = ref.offset + ref.nbytes
    if at != size:
        raise StageError(f"{path}: corrupt: {size - at} bytes after the last tensor", hint="download the model again")


def model_tensors(model_dir: Path) -> list[TensorRef]:
    """Every tensor of a Hugging Face model directory (sharded or not), in file and offset order."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise StageError(f"{index}: not a valid safetensors index") from None
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not files:
        raise StageError(f"{model_dir}: no .safetensors weights", hint="check --model / --base_model")
    refs: list[TensorRef] = []
    for name in files:
        if not (model_dir / name).exists():
            raise StageError(f"{model_dir / name}: missing shard named in the index", hint="download the model again")
        refs += scan(model_dir / name)
    seen: set[str] = set()
    for ref in refs:
        if ref.name in seen:
            raise StageError(f"{model_dir}: tensor {ref.name} appears in two shards", hint="download the model again")
        seen.add(ref.name)
    return refs


def read_raw(ref: TensorRef, fh: BinaryIO, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) in the stored dtype (bf16 as uint16 bits), shape (stop - start, *shape[1:])."""
    np_dtype, width = DTYPES[ref.dtype]
    nbytes = (stop - start) * ref.row_elems * width
    data = os.pread(fh.fileno(), nbytes, ref.offset + start * ref.row_elems * width)
    if len(data) != nbytes:
        raise StageError(f"{ref.file}: truncated while reading {ref.name}", hint="download the model again")
    return np.frombuffer(data, dtype=np_dtype).reshape((stop - start, *ref.shape[1:]) if ref.shape else ())


def read_rows(ref: TensorRef, fh: BinaryIO, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32."""
    return to_f32(read_raw(ref, fh, start, stop), ref.dtype)


def row_chunks(ref: TensorRef) -> Iterator[tuple[int, int]]:
    """Row ranges whose float32 working copy stays near CHUNK_BYTES."""
    step = max(1, CHUNK_BYTES // max(1, ref.row_elems * 4))
    for start in range(0, ref.rows, step):
        yield start, min(ref.rows, start + step)


class SafetensorsWriter:
    """Write a safetensors file whose tensor list is known up front, data streamed in order."""

    def __init__(self, path: Path, entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict | None = None):
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, dtype, shape in entries:
            nbytes = int(np.prod(shape)) * DTYPES[dtype][1]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, array: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(array).data)

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
