"""What the merge and convert stages need to know about a Hugging Face model directory: its config,
the files that must come along with the weights, and the checks on them."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import StageError

# Tokenizer and generation files: a merged folder without them is a classic source of broken GGUFs.
CARRIED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MERGE_RECORD = "w4tui_merge.json"  # the merge stage's note of what it merged (base and adapter paths)


def read_config(model: Path) -> dict:
    """config.json of a model directory, or a one-line error saying what is wrong."""
    if not model.is_dir():
        raise StageError(f"{model}: no such model directory")
    config_file = model / "config.json"
    if not config_file.is_file():
        raise StageError(f"{model}: not a Hugging Face model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise StageError(f"{config_file}: not valid JSON", hint="download the model again") from None
    if not isinstance(config, dict):
        raise StageError(f"{config_file}: not a JSON object", hint="download the model again")
    return config


def missing_tokenizer_files(*dirs: Path) -> list[str]:
    return [name for name in TOKENIZER_FILES if not any((d / name).is_file() for d in dirs)]


def check_model_dir(model: Path) -> dict:
    """The model's config, after checking that the tokenizer files a GGUF needs are there."""
    config = read_config(model)
    missing = missing_tokenizer_files(model)
    if missing:
        raise StageError(
            f"{model}: missing tokenizer files: {', '.join(missing)}",
            hint="copy them from the base model; without them the GGUF cannot tokenize",
        )
    return config
