"""The tokenizer as llama.cpp wants it in a GGUF, read straight from ``tokenizer.json`` (no transformers
import, so the stage starts fast): byte-level BPE tokens, their types, merges, special token ids and the
chat template. The result equals what llama.cpp's converter derives through transformers for Qwen2.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from core.errors import StageError
from stages.ggufio.writer import packed_strings

# llama.cpp picks the pre-tokenizer by name; Qwen2's splitting regex, as tokenizer.json spells it.
QWEN2_PRE = "qwen2"
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, config: dict) -> None:
    data = _json(model_dir / "tokenizer.json")
    tokens, types, merges = read_vocab(data, model_dir, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(data, model_dir))
    del data  # tens of MB of Python objects: gone before the weights stream through
    writer.add_token_list(packed_strings(tokens))
    writer.add_token_types(types)
    writer.add_token_merges(packed_strings(merges))
    del merges
    tok_config = _json(model_dir / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    # The order llama.cpp's SpecialVocab uses: tokenizer_config.json names the token, config.json the id.
    eos = _token_id(tok_config.get("eos_token"), ids)
    eos = eos if eos is not None else _config_id(config.get("eos_token_id"))
    bos = _token_id(tok_config.get("bos_token"), ids)
    bos = bos if bos is not None else _config_id(config.get("bos_token_id"))
    pad = _token_id(tok_config.get("pad_token"), ids)
    if eos is not None:
        writer.add_eos_token_id(eos)
    if pad is not None:
        writer.add_pad_token_id(pad)
    if bos is not None:
        writer.add_bos_token_id(bos)
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", False)))
    writer.add_add_eos_token(bool(tok_config.get("add_eos_token", False)))
    template = tok_config.get("chat_template")
    jinja = model_dir / "chat_template.jinja"  # newer transformers save the template beside the config
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def pre_tokenizer(data: dict, model_dir: Path) -> str:
    """Only Qwen2's splitting is known here; another would tokenize wrongly, so say so instead."""
    pre = data.get("pre_tokenizer") or {}
    splits = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    if splits == [QWEN2_SPLIT]:
        return QWEN2_PRE
    raise StageError(
        f"{model_dir / 'tokenizer.json'}: not Qwen2's pre-tokenizer; the built-in converter only knows it",
        hint="use --converter llama.cpp for this model",
    )


def read_vocab(data: dict, model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens padded to the embedding size, their llama.cpp types, and the BPE merges."""
    model = data.get("model") or {}
    if model.get("type") != "BPE" or "vocab" not in model:
        raise StageError(f"{model_dir / 'tokenizer.json'}: not a byte-level BPE tokenizer (Qwen2 uses one)")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= vocab_size:
        raise StageError(
            f"{model_dir}: the tokenizer has {max(by_id) + 1} tokens but the model only {vocab_size} embeddings",
            hint="is tokenizer.json from another model?",
        )
    T = gguf.TokenType
    tokens = [by_id.get(i) or f"[PAD{i}]" for i in range(vocab_size)]  # rows past the tokenizer: padding
    types = [int(T.NORMAL) if i in by_id else int(T.UNUSED) for i in range(vocab_size)]
    for i, token in added.items():
        text = token["content"]
        special = token.get("special") or (text.startswith("<|") and text.endswith("|>"))
        types[i] = int(T.CONTROL if special else T.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def _token_id(token, ids: dict[str, int]) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return ids.get(token) if isinstance(token, str) else None


def _config_id(value) -> int | None:
    if isinstance(value, list):  # generation configs list several eos ids; the first is the main one
        value = value[0] if value else None
    return int(value) if isinstance(value, int) else None


def _json(path: Path) -> dict:
    if not path.exists():
        raise StageError(
            f"{path}: missing", hint="copy the tokenizer files from the base model into the model directory"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StageError(f"{path}: not valid JSON", hint="copy it again from the base model") from None
