"""gguf's GGUFWriter for one little-endian file whose tensor data streams in row chunks.

GGUFWriter writes a tensor's data only from a whole array in memory, and packs array metadata item by
item through struct (about 2 s for Qwen's 151k tokens and 151k merges, more than converting the 0.5B
model's weights). This writer adds ``begin_tensor`` / ``write_rows`` / ``end_tensor``, which check the
writer's state and the tensor plan at each call as GGUFWriter's ``write_tensor_data`` does, and writes
the metadata with numpy and one join per array, byte for byte as GGUFWriter would. ``packed_strings``
turns a token list into its GGUF bytes at once, so the Python list can be dropped before the weights."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

import gguf
import numpy as np
from gguf import WriterState

V = gguf.GGUFValueType
SCALARS = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
    V.BOOL: "?",
}
NUMPY = {
    V.UINT8: "<u1",
    V.INT8: "<i1",
    V.UINT16: "<u2",
    V.INT16: "<i2",
    V.UINT32: "<u4",
    V.INT32: "<i4",
    V.FLOAT32: "<f4",
    V.UINT64: "<u8",
    V.INT64: "<i8",
    V.FLOAT64: "<f8",
    V.BOOL: "?",
}
PLAIN = {str: V.STRING, int: V.INT32, float: V.FLOAT32, bool: V.BOOL}  # GGUFValueType.get_type, by exact type


class PackedArray:
    """An array value already in GGUF's byte form."""

    def __init__(self, item_type: V, count: int, data: bytes) -> None:
        self.item_type, self.count, self.data = item_type, count, data

    def __len__(self) -> int:
        return self.count


def packed_strings(values: Sequence[str | bytes]) -> PackedArray:
    encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    lengths = map(struct.Struct("<Q").pack, map(len, encoded))
    return PackedArray(V.STRING, len(values), b"".join(chain.from_iterable(zip(lengths, encoded))))


def pack_value(value: Any, vtype: V, sub_type: V | None = None) -> bytes:
    """A metadata value's bytes (without its type tag), as GGUFWriter packs it for a little-endian file."""
    if vtype in SCALARS:
        return struct.pack(SCALARS[vtype], value)
    if vtype == V.STRING:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return struct.pack("<Q", len(data)) + data
    if vtype != V.ARRAY:
        raise ValueError(f"Invalid GGUF metadata value type {vtype!r}")
    if isinstance(value, PackedArray):
        return struct.pack("<IQ", value.item_type, value.count) + value.data
    if not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError("Invalid GGUF metadata array: expecting a non-empty sequence")
    item = sub_type or (V.UINT8 if isinstance(value, bytes) else _item_type(value))
    head = struct.pack("<IQ", item, len(value))
    if item == V.STRING:
        return head + packed_strings(value).data
    if item in NUMPY:
        return head + np.asarray(value, NUMPY[item]).tobytes()
    return head + b"".join(pack_value(v, item) for v in value)  # arrays of arrays


def _item_type(values: Sequence[Any]) -> V:
    types = set(map(type, values))
    if len(types) == 1 and (item := PLAIN.get(types.pop())) is not None:
        return item
    item = V.get_type(values[0])  # subclasses (enums, bytes, lists): GGUFWriter's own rule, item by item
    if not all(V.get_type(v) is item for v in values[1:]):
        raise ValueError("All items in a GGUF array should be of the same type")
    return item


class StreamingGGUFWriter(gguf.GGUFWriter):
    """Header, metadata and tensor infos as GGUFWriter writes them, then the data of each planned tensor
    in order, chunk by chunk. A call out of order, or a tensor longer or shorter than its info says,
    raises before it could shift every later tensor in the file."""

    def __init__(self, path: os.PathLike[str] | str, arch: str) -> None:
        super().__init__(path, arch)  # one file: no split, no temp file
        self._tensor: str | None = None  # the tensor being written
        self._nbytes = self._left = 0

    def write_kv_data_to_file(self) -> None:
        if self.state is not WriterState.HEADER:
            raise ValueError(f"Expected output file to contain the header, got {self.state}")
        (kv_data,) = self.kv_data
        out = self._file()
        for key, kv in kv_data.items():
            out.write(
                pack_value(key, V.STRING) + struct.pack("<I", kv.type) + pack_value(kv.value, kv.type, kv.sub_type)
            )
        kv_data.clear()  # written: free the token lists before the weights stream through
        self.flush()
        self.state = WriterState.KV_DATA

    def begin_tensor(self, name: str) -> None:
        """Start the data of ``name``, which must be the next tensor in the order of the tensor infos."""
        if self.state not in (WriterState.TI_DATA, WriterState.WEIGHTS) or self._tensor is not None:
            raise ValueError(
                f"Expected output file to contain tensor info or weights, got {self.state}"
                + (f" with {self._tensor!r} unfinished" if self._tensor else "")
            )
        pending = self.tensors[0]
        expected = next(iter(pending), None)
        if name != expected:
            raise ValueError(f"tensor data out of order: got {name!r}, the tensor infos say {expected!r}")
        out = self._file()
        self.write_padding(out, out.tell())
        self._tensor, self._nbytes = name, pending.pop(name).nbytes
        self._left = self._nbytes
        self.state = WriterState.WEIGHTS

    def write_rows(self, data: np.ndarray) -> None:
        """Append a chunk of the current tensor's data (already in its GGUF type and byte order)."""
        if self._tensor is None:
            raise ValueError("write_rows() outside begin_tensor() / end_tensor()")
        if data.nbytes > self._left:
            raise ValueError(
                f"{self._tensor}: {self._nbytes - self._left + data.nbytes} bytes, its tensor info says {self._nbytes}"
            )
        self._file().write(np.ascontiguousarray(data).data)
        self._left -= data.nbytes

    def end_tensor(self) -> None:
        if self._tensor is None or self._left:
            raise ValueError(
                f"{self._tensor}: {self._nbytes - self._left} bytes, its tensor info says {self._nbytes}"
                if self._tensor
                else "end_tensor() without begin_tensor()"
            )
        self.write_padding(self._file(), self._nbytes)
        self._tensor = None

    def finish(self) -> None:
        """Flush, fsync and close; refused unless every planned tensor was written whole."""
        missing = [name for tensors in self.tensors for name in tensors]
        if self.state is not WriterState.WEIGHTS or self._tensor is not None or missing:
            raise ValueError(
                f"GGUF file incomplete: {self._tensor or (missing[0] if missing else self.state)} not written"
            )
        out = self._file()
        out.flush()
        os.fsync(out.fileno())
        self.close()

    def _file(self):
        if self.fout is None or len(self.fout) != 1:
            raise ValueError(f"Expected one open output file, got {self.state}")
        return self.fout[0]
