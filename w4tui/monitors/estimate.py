"""How much memory a LoRA training will need, from the model's shape and the training settings.
Pure arithmetic, so the pre-flight check can refuse a run with figures before anything loads.

    total = frozen base weights (its dtype) + LoRA weights, grads and AdamW moments (fp32, 16 B/param)
          + activations for max_seq_length x batch (with or without gradient checkpointing)
          + a fixed allowance for the framework, allocator and caches

Activations per token follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models"), adapted to a SwiGLU decoder with grouped KV heads and PEFT's LoRA dropout copies;
the logits term (bf16 logits, their fp32 copy for the loss and its gradient) dominates for Qwen's
152k vocabulary. Checked against Qwen's published LoRA profile: tests/unit/test_monitors_preflight.py.
"""

from __future__ import annotations

from dataclasses import dataclass

QUANT_GROUP = 64  # mlx-lm's affine quantization: a bf16 scale and bias per 64 weights
OVERHEAD = 1_000_000_000  # framework, allocator slack, MPS/CUDA driver state (bytes)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + AdamW's two fp32 moments


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> ModelShape:
        """From a Hugging Face config.json (Qwen2/Llama names)."""
        heads = int(cfg["num_attention_heads"])
        return cls(
            int(cfg["hidden_size"]),
            int(cfg["num_hidden_layers"]),
            int(cfg["intermediate_size"]),
            int(cfg["vocab_size"]),
            heads,
            int(cfg.get("num_key_value_heads") or heads),
            bool(cfg.get("tie_word_embeddings", False)),
        )

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def module_dims(self) -> dict[str, tuple[int, int]]:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def params(self) -> int:
        per_layer = sum(a * b for a, b in self.module_dims().values()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden


# Qwen2.5-Coder-7B-Instruct's config.json: the default when the base model is not on disk yet.
QWEN25_7B = ModelShape(hidden=3584, layers=28, intermediate=18944, vocab=152064, heads=28, kv_heads=4)
# Hub repos whose shape is known offline (another repo's size is not known before it downloads).
KNOWN_REPOS = {"Qwen/Qwen2.5-Coder-7B-Instruct": QWEN25_7B}


@dataclass(frozen=True)
class TrainingMemory:
    weights: int
    lora: int  # LoRA weights + grads + optimizer moments
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.overhead


def sharded_weight_bytes(shape: ModelShape, dtype: str, ranks: int) -> int:
    """The base per GPU under FSDP over ``ranks`` ([train] shard = "fsdp"): its 1/ranks shard, and one
    unit gathered whole with the next one prefetched (a decoder layer, the embeddings or the head)."""
    layer = sum(a * b for a, b in shape.module_dims().values()) + 2 * shape.hidden
    unit = max(layer, shape.vocab * shape.hidden)
    return round(shape.params * DTYPE_BYTES[dtype] / ranks) + 2 * unit * DTYPE_BYTES[dtype]


def quantized_weight_bytes(shape: ModelShape, bits: int) -> int:
    """The base in mlx-lm's ``bits``-bit affine quantization (every projection and the embeddings; the
    norms, a rounding error here, are counted alike)."""
    return round(shape.params * (bits / 8 + 4 / QUANT_GROUP))


def lora_params(shape: ModelShape, r: int, targets: list[str]) -> int:
    dims = shape.module_dims()
    return shape.layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets if t in dims)


def activation_bytes_per_token(
    shape: ModelShape, dtype_bytes: int, seq: int, checkpointing: bool, fused_attention: bool, targets: list[str]
) -> float:
    h, kv, i, b = shape.hidden, shape.kv_dim, shape.intermediate, dtype_bytes
    dims = shape.module_dims()
    attention = b * (4 * h + 2 * kv) + 4 * h  # norm out, q, k, v, attn out, o out; fp32 RMSNorm input
    mlp = b * (h + 4 * i) + 4 * h  # norm out, gate, up, act(gate), act*up
    lora = sum(dims[t][0] for t in targets if t in dims) * (b + 1)  # dropout copy of each input + its mask
    scores = 0 if fused_attention else shape.heads * seq * (b + 4)  # scores + fp32 softmax (no fused kernel)
    layer = attention + mlp + lora + scores
    # Logits, their fp32 copy for the loss, its fp32 grad and the grad in the model dtype (fp32: no copies).
    logits = shape.vocab * (2 * b + 8 if b < 4 else 8)
    if checkpointing:  # each layer keeps its input; one layer at a time is recomputed with its grads
        return shape.layers * h * b + 2 * layer + logits
    return shape.layers * layer + logits


def training_memory(
    shape: ModelShape,
    dtype: str,
    seq: int,
    batch: int,
    checkpointing: bool,
    r: int,
    targets: list[str],
    fused_attention: bool = False,
    quantize_bits: int = 0,
) -> TrainingMemory:
    """``quantize_bits`` 4/8: mlx's QLoRA base (activations stay in ``dtype``)."""
    b = DTYPE_BYTES[dtype]
    tokens = seq * batch
    act = activation_bytes_per_token(shape, b, seq, checkpointing, fused_attention, targets) * tokens
    weights = quantized_weight_bytes(shape, quantize_bits) if quantize_bits else shape.params * b
    return TrainingMemory(weights, lora_params(shape, r, targets) * LORA_BYTES_PER_PARAM, round(act), OVERHEAD)
