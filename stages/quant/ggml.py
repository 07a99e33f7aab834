"""ggml's own quantization routines, through ctypes on the libggml-base that llama-cpp-python ships.

The same library llama_model_quantize calls, so a row quantized here is the row llama-quantize
writes. ctypes releases the GIL for each call: row chunks quantize in parallel on a thread pool.
The library is found without importing llama_cpp (that would load libllama and install its logger).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
from pathlib import Path

import gguf
import numpy as np

from core.errors import StageError

Q = gguf.GGMLQuantizationType
_SUFFIX = ".dylib" if sys.platform == "darwin" else ".dll" if sys.platform == "win32" else ".so"


def library_path() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for sub in ("lib", ""):
            path = Path(folder) / sub / f"libggml-base{_SUFFIX}"
            if path.is_file():
                return path
    return None


@functools.cache
def _lib() -> ctypes.CDLL:
    path = library_path()
    if path is None:
        raise StageError(
            "quantizing in the convert stage needs ggml from the llama_cpp Python binding, which is not installed",
            hint="pip install llama-cpp-python, or convert with --outtype f16 and run the quantize stage",
        )
    lib = ctypes.CDLL(str(path))  # CDLL (not PyDLL): each call releases the GIL
    i64, size_t, vp = ctypes.c_int64, ctypes.c_size_t, ctypes.c_void_p
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, vp, vp, i64, i64, i64, vp]
    lib.ggml_quantize_chunk.restype = size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_row_size.argtypes = [ctypes.c_int, i64]
    lib.ggml_row_size.restype = size_t
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, vp, size_t]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    return lib


def available() -> bool:
    return library_path() is not None


def prepare(qtypes: set[Q]) -> None:
    """Initialise ggml's tables for these types once, before the pool starts (the lazy init is not
    meant to race), and refuse a type that would need an importance matrix."""
    lib = _lib()
    for qtype in qtypes:
        if lib.ggml_quantize_requires_imatrix(int(qtype)):
            raise StageError(f"{qtype.name} needs an importance matrix; use the quantize stage with --imatrix")
        lib.ggml_quantize_init(int(qtype))


def row_size(qtype: Q, n_per_row: int) -> int:
    return int(_lib().ggml_row_size(int(qtype), n_per_row))


def quantize_rows(qtype: Q, values: np.ndarray, n_per_row: int) -> np.ndarray:
    """float32 rows (n_per_row values each) as ggml's ``qtype`` blocks, validated as llama.cpp does."""
    lib = _lib()
    src = np.ascontiguousarray(values, dtype=np.float32)
    nrows = src.size // n_per_row
    out = np.empty(nrows * row_size(qtype, n_per_row), np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype), src.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None)
    if written != out.nbytes or not lib.ggml_validate_row_data(int(qtype), out.ctypes.data, out.nbytes):
        raise StageError(f"ggml's {qtype.name} quantization produced invalid data (a NaN or infinite weight?)")
    return out
