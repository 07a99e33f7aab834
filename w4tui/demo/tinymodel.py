"""Build small Qwen2-architecture models with random weights, offline, without torch.

The layout matches a real Hugging Face Qwen2.5 checkpoint in every format detail (bf16 safetensors
shards with an index, config.json, generation_config.json, the real Qwen2.5 tokenizer), so every
stage runs on it exactly as on the 7B model. Used by `w4tui demo`, the tests and the benchmarks.
Tensors are generated and written one at a time, so even a 7B-shaped model needs little memory.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.fsutil import atomic_path

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "data" / "qwen2.5-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class Shape:
    hidden: int = 64
    layers: int = 2
    ffn: int = 128
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 151936
    tied: bool = False
    max_positions: int = 32768


SHAPES = {
    "tiny": Shape(),
    "0.5b": Shape(hidden=896, layers=24, ffn=4864, heads=14, kv_heads=2, vocab=151936, tied=True),
    "7b": Shape(hidden=3584, layers=28, ffn=18944, heads=28, kv_heads=4, vocab=152064, tied=False),
}


def qwen2_config(shape: Shape) -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.ffn,
        "max_position_embeddings": shape.max_positions,
        "max_window_layers": shape.layers,
        "model_type": "qwen2",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": shape.max_positions,
        "tie_word_embeddings": shape.tied,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": shape.vocab,
    }


GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}


def tensor_shapes(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in the order Hugging Face writes them."""
    head_dim = shape.hidden // shape.heads
    kv = shape.kv_heads * head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (shape.vocab, shape.hidden))]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (shape.hidden,)),
            (p + "self_attn.q_proj.weight", (shape.hidden, shape.hidden)),
            (p + "self_attn.q_proj.bias", (shape.hidden,)),
            (p + "self_attn.k_proj.weight", (kv, shape.hidden)),
            (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, shape.hidden)),
            (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (shape.hidden, shape.hidden)),
            (p + "post_attention_layernorm.weight", (shape.hidden,)),
            (p + "mlp.gate_proj.weight", (shape.ffn, shape.hidden)),
            (p + "mlp.up_proj.weight", (shape.ffn, shape.hidden)),
            (p + "mlp.down_proj.weight", (shape.hidden, shape.ffn)),
        ]
    out.append(("model.norm.weight", (shape.hidden,)))
    if not shape.tied:
        out.append(("lm_head.weight", (shape.vocab, shape.hidden)))
    return out


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even like torch does."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + np.uint32(0x7FFF)
    return ((u + rounding) >> 16).astype(np.uint16)


def _random_tensor(
    rng: np.random.Generator, name: str, shp: tuple[int, ...], std: float, head_std: float
) -> np.ndarray:
    if name.endswith("norm.weight"):  # near 1, not exactly, so a mixed-up norm shows in the logits
        return (1.0 + 0.1 * rng.standard_normal(shp, dtype=np.float32)).astype(np.float32)
    if name.endswith(".bias"):
        return (0.1 * rng.standard_normal(shp, dtype=np.float32)).astype(np.float32)
    scale = head_std if name in ("lm_head.weight", "model.embed_tokens.weight") else std
    return (scale * rng.standard_normal(shp, dtype=np.float32)).astype(np.float32)


def write_safetensors_bf16(
    path: Path,
    tensors: list[tuple[str, tuple[int, ...]]],
    produce: Iterator[np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write BF16 tensors in safetensors format, one at a time from ``produce`` (float32 arrays)."""
    header: dict[str, dict] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, shp in tensors:
        nbytes = int(np.prod(shp)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for (name, shp), array in zip(tensors, produce):
            assert array.shape == tuple(shp), (name, array.shape, shp)
            fh.write(to_bf16_bits(array).tobytes())


def build_model(
    output: str | Path,
    shape: Shape | str = "tiny",
    seed: int = 0,
    shards: int = 2,
    std: float = 0.02,
    head_std: float | None = None,
) -> Path:
    """Write a random Qwen2 model in Hugging Face layout to ``output`` (atomically) and return it.

    ``head_std`` (embeddings and lm_head) defaults larger for the tiny shape: with hidden size 64 and
    std 0.02 the logits are nearly flat and no adapter could lower the loss visibly."""
    head_std = head_std if head_std is not None else (0.25 if shape == "tiny" else std)
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    output = Path(output)
    names = tensor_shapes(shape)
    rng = np.random.default_rng(seed)
    with atomic_path(output) as tmp:
        tmp.mkdir(parents=True)
        groups = _split(names, shards)
        weight_map: dict[str, str] = {}
        for index, group in enumerate(groups, start=1):
            fname = "model.safetensors" if len(groups) == 1 else f"model-{index:05d}-of-{len(groups):05d}.safetensors"
            write_safetensors_bf16(tmp / fname, group, (_random_tensor(rng, n, s, std, head_std) for n, s in group))
            weight_map.update({n: fname for n, _ in group})
        if len(groups) > 1:
            total = sum(int(np.prod(s)) * 2 for _, s in names)
            index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(qwen2_config(shape), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
        copy_tokenizer(tmp)
    return output


def copy_tokenizer(directory: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / name, directory / name)


def _split(names: list[tuple[str, tuple[int, ...]]], shards: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Split into ``shards`` groups of roughly equal bytes, keeping order (as HF's sharding does)."""
    total = sum(int(np.prod(s)) for _, s in names)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    done = 0
    for name, shp in names:
        if groups[-1] and done >= total * len(groups) / shards and len(groups) < shards:
            groups.append([])
        groups[-1].append((name, shp))
        done += int(np.prod(shp))
    return groups
