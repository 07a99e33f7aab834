"""Read a GGUF file's header fast: its scalar key-values and tensor list, without loading any data.

gguf-py's GGUFReader turns every element of the 152k-entry tokenizer arrays into Python objects, which
takes seconds; the stages only need a few keys (file type, architecture) and the tensor shapes, so this
walks the header with ``struct`` and skips arrays by length. Standard library only.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"GGUF"
# llama_ftype values (general.file_type) for the types this project reads or writes.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    7: "Q8_0",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}
FTYPE_OF = {name: value for value, name in FILE_TYPES.items()}
UNQUANTIZED = ("F32", "F16", "BF16")
# ggml tensor types by id (the ones a Qwen2 GGUF of these file types holds).
TENSOR_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    30: "BF16",
}
# ggml type id -> (elements per block, bytes per block), as in ggml's type_traits (ggml/src/ggml.c); what a
# tensor's data takes in the file. gguf-py's GGML_QUANT_SIZES holds the same (a test compares them).
TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip
MAX_DIMS = 4  # GGML_MAX_DIMS
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class NotGGUF(ValueError):
    """The file is not a GGUF file, its header is cut short, or its tensor data does not fit in it."""


class _Corrupt(Exception):
    """A header inconsistency; the message says which (read_info adds the file name)."""


@dataclass
class GGUFInfo:
    version: int
    kv: dict[str, object] = field(default_factory=dict)  # scalars and strings; arrays as their length
    tensors: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)  # name, shape, ggml type
    data_offset: int = 0  # where the tensor data starts in the file

    @property
    def file_type(self) -> str:
        """F16, BF16, Q4_K_M, ... ("F16" when the key is missing, as llama.cpp assumes)."""
        value = self.kv.get("general.file_type", 1)
        return FILE_TYPES.get(int(value), f"type {value}")  # type: ignore[arg-type]

    @property
    def architecture(self) -> str:
        return str(self.kv.get("general.architecture", ""))

    @property
    def parameters(self) -> int:
        count = 0
        for _, shape, _ in self.tensors:
            n = 1
            for d in shape:
                n *= d
            count += n
        return count


def is_gguf(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def written_by_w4tui(path: str | Path) -> bool:
    """A GGUF this project's convert or quantize stage wrote: it carries the w4tui.* lineage keys
    (llama.cpp's quantizer copies them along). Stages replace such a file, never another one."""
    try:
        return any(key.startswith("w4tui.") for key in read_info(path, tensors=False).kv)
    except (NotGGUF, OSError):
        return False


def read_info(path: str | Path, tensors: bool = True) -> GGUFInfo:
    """The header of ``path``; raises NotGGUF for anything that is not a complete GGUF file: a cut or
    corrupt header, or tensor data that does not lie inside the file (a truncated download or copy).
    ``tensors=False`` leaves the tensor list out of the result; the checks are made either way."""
    with open(path, "rb") as fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise NotGGUF(f"{path}: empty file, not a GGUF file") from None
    with mm:
        if mm[:4] != MAGIC:
            raise NotGGUF(f"{path}: not a GGUF file (it does not start with 'GGUF')")
        try:
            return _parse(mm, tensors)
        except _Corrupt as exc:
            raise NotGGUF(f"{path}: {exc}") from None
        except (struct.error, IndexError, UnicodeDecodeError, KeyError) as exc:
            raise NotGGUF(f"{path}: truncated or corrupt GGUF header ({exc.__class__.__name__})") from None


_MIN_TENSOR_INFO = 8 + 4 + 12  # name length, dimension count, type and offset (an empty name, no dims)
_MIN_KV = 8 + 4 + 1  # key length, value type, the smallest value


def _parse(mm: mmap.mmap, want_tensors: bool) -> GGUFInfo:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
    if version < 2:
        raise KeyError("GGUF v1")
    info, pos = GGUFInfo(version), 24
    # A count no file of this size can hold is named as such, not by whatever the bytes after the header
    # happen to read as (that depends on the header's length: a path in it makes it differ per machine).
    if n_tensors * _MIN_TENSOR_INFO + n_kv * _MIN_KV > len(mm) - pos:
        raise _Corrupt(f"truncated or corrupt GGUF header: {n_tensors} tensors and {n_kv} keys cannot fit in the file")

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", mm, at)
        if at + 8 + n > len(mm):
            raise IndexError("string past the end")
        return mm[at + 8 : at + 8 + n].decode("utf-8"), at + 8 + n

    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", mm, pos)
        pos += 4
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", mm, pos)
            pos += 12
            if etype == _STRING:
                for _ in range(count):
                    pos += 8 + struct.unpack_from("<Q", mm, pos)[0]
            else:
                pos += count * struct.calcsize("<" + _SCALARS[etype])
            info.kv[key] = count
        elif vtype == _STRING:
            info.kv[key], pos = string(pos)
        else:
            fmt = "<" + _SCALARS[vtype]
            (info.kv[key],) = struct.unpack_from(fmt, mm, pos)
            pos += struct.calcsize(fmt)
    infos = []
    for _ in range(n_tensors):
        name, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", mm, pos)
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"corrupt GGUF header: tensor {name} has {n_dims} dimensions")
        dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
        ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        infos.append((name, dims, ttype, offset))
    alignment = int(info.kv.get("general.alignment", 32))  # type: ignore[call-overload]
    if alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"corrupt GGUF header: general.alignment {alignment} is not a power of two")
    info.data_offset = _pad(pos, alignment)
    _check_extents(infos, info.data_offset, alignment, len(mm))
    if want_tensors:
        info.tensors = [(n, tuple(reversed(d)), TENSOR_TYPES.get(t, f"type {t}")) for n, d, t, _ in infos]
    return info


def _pad(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def _check_extents(infos: list, data_offset: int, alignment: int, size: int) -> None:
    """Each tensor's data starts where the one before it ended (padded), as llama.cpp requires
    (ggml/src/gguf.cpp: "tensor has offset X, expected Y"), and ends inside the file."""
    expected = 0
    for name, dims, ttype, offset in infos:
        if ttype not in TYPE_SIZES:
            raise _Corrupt(f"corrupt GGUF header: tensor {name} has unknown type {ttype}")
        block, block_bytes = TYPE_SIZES[ttype]
        count = 1
        for d in dims:
            count *= d
        if count % block:
            raise _Corrupt(f"corrupt GGUF header: tensor {name} has {count} elements, not whole blocks of {block}")
        if offset != expected:
            raise _Corrupt(f"corrupt GGUF header: tensor {name} has offset {offset}, expected {expected}")
        end = data_offset + offset + count // block * block_bytes
        if end > size:
            raise _Corrupt(f"truncated: tensor {name} ends at byte {end}, the file has {size} bytes")
        expected = _pad(offset + count // block * block_bytes, alignment)
