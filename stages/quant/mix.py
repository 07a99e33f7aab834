"""Which ggml type each tensor gets in a llama.cpp file type (Q4_K_M, ...), and in what order.

Follows llama.cpp's src/llama-quant.cpp (tensor_allows_quantization, llama_tensor_get_type_impl,
tensor_type_fallback, the weights_map order of llama-model-loader.h) for the dense, non-Falcon
models the built-in converter writes (Qwen2; 80 layers is its "70B" type), without an importance matrix: the same
tensors get more bits by layer and role, the output/embedding rule, and the fallbacks for rows
that are not whole blocks. Our own code; re-check it against that file when llama.cpp moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType

# file type -> (its general.file_type value, its default tensor type); llama_ftype_get_default_type
FTYPES: dict[str, tuple[F, Q]] = {
    "Q8_0": (F.MOSTLY_Q8_0, Q.Q8_0),
    "Q6_K": (F.MOSTLY_Q6_K, Q.Q6_K),
    "Q5_K_M": (F.MOSTLY_Q5_K_M, Q.Q5_K),
    "Q5_K_S": (F.MOSTLY_Q5_K_S, Q.Q5_K),
    "Q4_K_M": (F.MOSTLY_Q4_K_M, Q.Q4_K),
    "Q4_K_S": (F.MOSTLY_Q4_K_S, Q.Q4_K),
    "Q3_K_L": (F.MOSTLY_Q3_K_L, Q.Q3_K),
    "Q3_K_M": (F.MOSTLY_Q3_K_M, Q.Q3_K),
    "Q3_K_S": (F.MOSTLY_Q3_K_S, Q.Q3_K),
    "Q2_K": (F.MOSTLY_Q2_K, Q.Q2_K),
}
# a 256-block type on rows that are not whole blocks drops to this 32-block type (then F16)
FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
# names llama.cpp never quantizes (the ones a dense text model can have)
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "attn_rel_b.weight", ".position_embd", "ssm_conv1d")
_KEEP_EXACT = ("position_embd.weight", "token_types.weight")
_LAYER = re.compile(r"blk\.(-?\d+)\.")


def block(qtype: Q) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


def layer_of(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def llama_order(names: list[str]) -> list[str]:
    """The order llama-quantize writes tensors in: by layer (non-layer tensors first), then by name."""
    return sorted(names, key=lambda n: (layer_of(n), n.encode()))


def n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing (ggml: leading) sizes of 1 do not count."""
    big = [i for i, d in enumerate(reversed(shape)) if d > 1]
    return big[-1] + 1 if big else 1


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    return (
        n_dims(shape) >= 2 and name.endswith("weight") and not any(k in name for k in _KEEP) and name not in _KEEP_EXACT
    )


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (
        ("attn_qkv.weight", "attn_v"),  # the three count as attn_v (category_is_attn_v)
        ("attn_kv_b.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if part in name:
            return cat
    return "other"


def more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _Counters:
    n_attn_v: int
    n_layer: int
    is_70b: bool
    i_attn_v: int = 0
    i_ffn_down: int = 0


def tensor_types(
    tensors: list[tuple[str, tuple[int, ...], Q]], ftype: str, n_layer: int, n_head: int, n_head_kv: int
) -> tuple[dict[str, Q], int]:
    """(GGUF name -> type in the ``ftype`` file, how many fell back) for (name, HF shape, type in the
    F16 file) given in llama_order. Tensors llama.cpp leaves alone keep their F16-file type."""
    default = FTYPES[ftype][1]
    names = [name for name, _, _ in tensors]
    tied = "output.weight" not in names
    count = _Counters(sum(category(n) == "attn_v" for n in names), n_layer, n_layer == 80)  # models/qwen2.cpp
    gqa = n_head // max(n_head_kv, 1)
    out, fell_back = {}, 0
    for name, shape, stored in tensors:
        if not quantizable(name, shape):
            out[name] = stored
            continue
        chosen = _mix(ftype, default, category(name), shape[-1], tied, gqa, count)
        out[name] = _fallback(chosen, shape[-1])
        fell_back += shape[-1] % block(chosen) != 0
    return out, fell_back


def _mix(ftype: str, qtype: Q, cat: str, ncols: int, tied: bool, gqa: int, c: _Counters) -> Q:
    """llama_tensor_get_type_impl for the file types in FTYPES."""
    if cat == "output" or (tied and cat == "token_embd"):
        if ncols % block(qtype):
            return Q.Q8_0
        return qtype if qtype == Q.Q8_0 else Q.Q6_K
    if cat == "attn_v":
        if ftype == "Q2_K":
            qtype = Q.Q4_K if gqa >= 4 else Q.Q3_K
        elif ftype == "Q3_K_M":
            qtype = Q.Q5_K if c.i_attn_v < 2 else Q.Q4_K
        elif ftype == "Q3_K_L":
            qtype = Q.Q5_K
        elif ftype in ("Q4_K_M", "Q5_K_M") and more_bits(c.i_attn_v, c.n_attn_v):
            qtype = Q.Q6_K
        elif ftype == "Q4_K_S" and c.i_attn_v < 4:
            qtype = Q.Q5_K
        if c.is_70b and qtype in (Q.Q3_K, Q.Q4_K):  # 8 heads share attn_v: more bits cost little
            qtype = Q.Q5_K
        c.i_attn_v += 1
    elif cat == "ffn_down":
        i, n = c.i_ffn_down, c.n_layer
        if ftype == "Q2_K":
            qtype = Q.Q3_K
        elif ftype == "Q3_K_M":
            qtype = Q.Q5_K if i < n // 16 else Q.Q4_K
        elif ftype == "Q3_K_L":
            qtype = Q.Q5_K
        elif ftype in ("Q4_K_M", "Q5_K_M") and more_bits(i, n):
            qtype = Q.Q6_K
        elif ftype == "Q4_K_S" and i < n // 8:
            qtype = Q.Q5_K
        c.i_ffn_down += 1
    elif cat == "attn_output":
        qtype = {"Q2_K": Q.Q3_K, "Q3_K_M": Q.Q4_K, "Q3_K_L": Q.Q5_K}.get(ftype, qtype)
    return qtype


def _fallback(qtype: Q, ncols: int) -> Q:
    """tensor_type_fallback: rows that are not whole blocks get a smaller block, else F16."""
    if ncols % block(qtype) == 0:
        return qtype
    smaller = FALLBACK.get(qtype, qtype)
    return smaller if ncols % block(smaller) == 0 else Q.F16
