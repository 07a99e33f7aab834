"""What llama.cpp needs to know about a Qwen2 model, read from its Hugging Face files:
architecture hyper-parameters, the byte-level BPE tokenizer, special tokens, the chat template.

The tokenizer is read straight from ``tokenizer.json`` (no transformers import: the stage starts fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from stages._stage import StageError

ARCHITECTURES = {"Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2, "Qwen2Model": gguf.MODEL_ARCH.QWEN2}
QWEN2_PRE = "qwen2"  # llama.cpp's name for the Qwen2 pre-tokenizer regex


def architecture(config: dict, model_dir: Path) -> gguf.MODEL_ARCH:
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise StageError(f"{model_dir}: unsupported architecture {', '.join(names) or '(none)'}; "
                     f"the built-in converter handles {', '.join(ARCHITECTURES)}",
                     hint="set [tools] convert_hf_to_gguf to llama.cpp's converter for other models")


def write_hparams(writer: gguf.GGUFWriter, config: dict) -> None:
    heads = config["num_attention_heads"]
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 32768))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    scaling = config.get("rope_scaling") or {}
    if scaling.get("type", scaling.get("rope_type")) == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def write_sampling(writer: gguf.GGUFWriter, model_dir: Path) -> None:
    """The base model's recommended sampling, as llama.cpp's converter records it."""
    path = model_dir / "generation_config.json"
    if not path.exists():
        return
    gen = json.loads(path.read_text())
    if "top_k" in gen:
        writer.add_int32(gguf.Keys.General.SAMPLING_TOP_K, int(gen["top_k"]))
    if "top_p" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_TOP_P, float(gen["top_p"]))
    if "temperature" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_TEMP, float(gen["temperature"]))
    if "repetition_penalty" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_PENALTY_REPEAT, float(gen["repetition_penalty"]))


def write_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    tokens, types, merges = read_vocab(model_dir, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(QWEN2_PRE)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    tok_config = _json(model_dir / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    config = _json(model_dir / "config.json")
    eos = _token_id(tok_config.get("eos_token"), ids) or config.get("eos_token_id")
    pad = _token_id(tok_config.get("pad_token"), ids)
    bos = config.get("bos_token_id") or _token_id(tok_config.get("bos_token"), ids)
    if eos is not None:
        writer.add_eos_token_id(int(eos))
    if pad is not None:
        writer.add_pad_token_id(int(pad))
    if bos is not None:
        writer.add_bos_token_id(int(bos))
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", False)))
    writer.add_add_eos_token(bool(tok_config.get("add_eos_token", False)))
    template = tok_config.get("chat_template")
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def read_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens padded to the embedding size, their llama.cpp types, and the BPE merges."""
    data = _json(model_dir / "tokenizer.json")
    model = data.get("model") or {}
    if model.get("type") != "BPE" or "vocab" not in model:
        raise StageError(f"{model_dir / 'tokenizer.json'}: not a byte-level BPE tokenizer (Qwen2 uses one)")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= vocab_size:
        raise StageError(f"{model_dir}: tokenizer has {max(by_id) + 1} tokens but the model only {vocab_size} embeddings")
    tokens, types = [], []
    T = gguf.TokenType
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
        elif i in added:
            text = added[i]["content"]
            special = added[i].get("special") or (text.startswith("<|") and text.endswith("|>"))
            tokens.append(text)
            types.append(T.CONTROL if special else T.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(T.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def _token_id(token, ids: dict[str, int]) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return ids.get(token) if isinstance(token, str) else None


def _json(path: Path) -> dict:
    if not path.exists():
        raise StageError(f"{path}: missing", hint="copy the tokenizer files from the base model into the model directory")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StageError(f"{path}: not valid JSON") from None
