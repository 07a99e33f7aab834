"""The convert stage's quantized outputs (--outtype Q4_K_M, ...): the file llama_model_quantize would
make from our F16 GGUF, written straight from the merged rows, with no F16 file on disk.

What llama-quantize changes in the F16 file, and so what this does (src/llama-quant.cpp):
- tensors in its order (stages.quant.mix.llama_order), each of the type stages.quant.mix picks;
- a quantized tensor's rows are the F16 file's values widened to float32, then ggml's routine;
- every other tensor (norms, biases, F16 fallbacks) is copied in the F16 file's type;
- the metadata is the F16 file's, with general.quantization_version and general.file_type set last
  (gguf_set_val removes a key and appends it).
"""

from __future__ import annotations

import dataclasses

import gguf

from stages.ggufio.tensors import TensorPlan
from stages.quant import ggml
from stages.quant.mix import FTYPES, llama_order, tensor_types

QUANT_OUTTYPES = tuple(FTYPES)


def quantized_plan(f16_plan: list[TensorPlan], ftype: str, config: dict) -> tuple[list[TensorPlan], int]:
    """The F16 file's tensors reordered and retyped as llama-quantize writes them for ``ftype``, and
    how many of them fell back to another type (rows not whole blocks)."""
    by_name = {t.name: t for t in f16_plan}
    order = llama_order(list(by_name))
    heads = int(config["num_attention_heads"])
    types, fell_back = tensor_types(
        [(n, by_name[n].ref.shape, by_name[n].qtype) for n in order],
        ftype,
        int(config["num_hidden_layers"]),
        heads,
        int(config.get("num_key_value_heads", heads)),
    )
    plan = [dataclasses.replace(by_name[n], qtype=types[n], stored=by_name[n].qtype) for n in order]
    ggml.prepare({t.qtype for t in plan if t.qtype != t.stored})
    return plan, fell_back


def set_file_type(writer: gguf.GGUFWriter, ftype: str) -> None:
    """general.quantization_version then general.file_type, moved to the end as llama-quantize does."""
    kv = writer.kv_data[0]
    for key in (gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE):
        kv.pop(key, None)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(FTYPES[ftype][0])
