"""A small GGUF reader for the tests: key-values as plain Python values, tensors as raw bytes.

gguf's GGUFReader takes ~8 s on a file with Qwen's 151k tokens and 151k merges (a numpy view per
string); this one reads the same file in well under a second, which keeps the fidelity tests cheap.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass
class Tensor:
    name: str
    type: GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    data: memoryview  # raw bytes, mapped from the file


@dataclass
class Gguf:
    kv: dict[str, object]
    kv_order: list[str]
    tensors: dict[str, Tensor]  # in file order


def read_gguf(path: str | Path) -> Gguf:
    with open(path, "rb") as fh:
        buf = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return bytes(buf[pos - n : pos]).decode("utf-8")

    def value(vtype: int):
        if vtype == STRING:
            return string()
        if vtype == ARRAY:
            item_type, n = take("<I"), take("<Q")
            return [value(item_type) for _ in range(n)]
        return take(SCALARS[vtype])

    assert bytes(buf[:4]) == b"GGUF", "not a GGUF file"
    pos = 4
    take("<I")  # version
    n_tensors, n_kv = take("<Q"), take("<Q")
    kv: dict[str, object] = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        shape = tuple(take("<Q") for _ in range(take("<I")))
        infos.append((name, GGMLQuantizationType(take("<I")), shape, take("<Q")))
    align = int(kv.get("general.alignment", 32))
    start = -(-pos // align) * align
    tensors = {}
    for name, qtype, shape, offset in infos:
        block, size = GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape)) // block * size
        tensors[name] = Tensor(name, qtype, shape, buf[start + offset : start + offset + nbytes])
    return Gguf(kv, list(kv), tensors)
