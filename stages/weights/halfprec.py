"""bf16 / f16 / f32 conversions in numpy, rounding exactly as torch does, fast enough to stream a model.

bf16 has no numpy dtype, so it travels as uint16 bit patterns ("raw" arrays: uint16 for BF16, float16
for F16, float32 for F32). bf16 -> f16 works on the bits directly: every bf16 value in f16's normal
range converts exactly by re-biasing the exponent, a few cheap uint16 operations; only the rare values
outside it (zeros, tiny values that become f16 subnormals, huge ones that overflow) go through float32.
"""

from __future__ import annotations

import numpy as np

RAW = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}
_F16_MIN_EXP, _F16_MAX_EXP = 113, 142  # bf16 exponents (bias 127) that are normal in f16 (bias 15)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    out = np.empty(bits.shape, np.uint32)
    np.left_shift(bits, 16, out=out, dtype=np.uint32)
    return out.view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round to nearest even, as torch does (NaN stays a quiet NaN)."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    r = u >> 16
    r &= 1
    r += 0x7FFF
    r += u
    r >>= 16
    out = r.astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():  # a NaN with low mantissa bits only would otherwise round to infinity
        out[nan] = 0x7FC0
    return out


def bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    """bf16 bits -> float16, equal to converting through float32 (round to nearest even)."""
    exponent = bits & 0x7F80
    out = bits & 0x7FFF
    out -= (127 - 15) << 7  # re-bias the exponent (wraps for values outside f16's range: fixed below)
    out <<= 3
    out |= bits & 0x8000
    exponent -= _F16_MIN_EXP << 7  # wraps below 0, so one unsigned compare finds both ends
    odd = np.flatnonzero(exponent > ((_F16_MAX_EXP - _F16_MIN_EXP) << 7))
    if odd.size:
        flat = out.reshape(-1)
        with np.errstate(over="ignore"):  # beyond f16's range is infinity, as in torch
            flat[odd] = bf16_to_f32(bits.reshape(-1)[odd]).astype(np.float16).view(np.uint16)
    return out.view(np.float16)


def to_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(raw)
    return raw.astype(np.float32, copy=False)


def from_f32(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> raw array of ``dtype`` (one rounding)."""
    if dtype == "BF16":
        return f32_to_bf16(values)
    return values.astype(RAW[dtype], copy=False)


def convert(raw: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A raw array of dtype ``src`` as a raw array of ``dst`` (torch's .to() rounding)."""
    if src == dst:
        return raw
    if (src, dst) == ("BF16", "F16"):
        return bf16_to_f16(raw)
    return from_f32(to_f32(raw, src), dst)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to the nearest value of ``dtype``, still as float32."""
    if dtype == "F32":
        return values
    return to_f32(from_f32(values, dtype), dtype)
