"""The GGUF key-values llama.cpp needs for a Qwen2 model, read from its Hugging Face files: general
metadata (name, size label, file type, lineage), architecture hyper-parameters, recommended sampling and
the tokenizer (stages.ggufio.vocab). Keys and values match llama.cpp's convert_hf_to_gguf.py."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from core.errors import StageError
from stages.ggufio.tensors import FILE_TYPES, TensorPlan
from stages.ggufio.vocab import write_tokenizer

ARCHITECTURES = {"Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2}


def architecture(config: dict, model_dir: Path) -> gguf.MODEL_ARCH:
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise StageError(
        f"{model_dir / 'config.json'}: unsupported architecture {', '.join(names) or '(none)'}; "
        f"the built-in converter handles {', '.join(ARCHITECTURES)}",
        hint="set [tools] convert_hf_to_gguf to llama.cpp's converter and use --converter llama.cpp",
    )


def write_metadata(
    writer: gguf.GGUFWriter,
    arch: gguf.MODEL_ARCH,
    config: dict,
    model_dir: Path,
    outtype: str,
    plan: list[TensorPlan],
    name: str,
    lineage: dict[str, str],
) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(gguf.size_label(sum(int(np.prod(t.ref.shape)) for t in plan), 0, 0, 0))
    write_hparams(writer, config, model_dir)
    writer.add_file_type(FILE_TYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_sampling(writer, model_dir)
    write_tokenizer(writer, model_dir, config)
    # Lineage: a fine-tune names its base in the standard keys; the paths go in w4tui.* keys
    # (llama.cpp ignores them, the artifact ledger can read them back from the file).
    if lineage.get("adapter"):
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, Path(lineage["base_model"]).name)
    for key, value in lineage.items():
        writer.add_string(f"w4tui.{key}", value)


def write_hparams(writer: gguf.GGUFWriter, config: dict, model_dir: Path) -> None:
    try:
        heads = int(config["num_attention_heads"])
        writer.add_block_count(int(config["num_hidden_layers"]))
        writer.add_embedding_length(int(config["hidden_size"]))
        writer.add_feed_forward_length(int(config["intermediate_size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StageError(
            f"{model_dir / 'config.json'}: missing or bad {exc}", hint="download the model again"
        ) from None
    writer.add_context_length(int(config.get("max_position_embeddings", 32768)))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", heads)))
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
    try:
        gen = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StageError(f"{path}: not valid JSON", hint="copy it again from the base model") from None
    if "top_k" in gen:
        writer.add_int32(gguf.Keys.General.SAMPLING_TOP_K, int(gen["top_k"]))
    if "top_p" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_TOP_P, float(gen["top_p"]))
    if "temperature" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_TEMP, float(gen["temperature"]))
    if "repetition_penalty" in gen:
        writer.add_float32(gguf.Keys.General.SAMPLING_PENALTY_REPEAT, float(gen["repetition_penalty"]))
