"""Convert a Hugging Face Qwen2 model to GGUF, optionally merging a LoRA adapter in the same pass.

    python -m stages.convert_gguf --model DIR --output model-f16.gguf [--outtype f16|bf16|f32|q8_0]
    python -m stages.convert_gguf --model BASE --adapter ADAPTER --output nightly-f16.gguf

Tensors stream from the safetensors shards in row chunks straight into the GGUF file (written under a
temporary name, fsynced, then renamed), so memory stays at one chunk whatever the model size and the
nightly loop never writes a merged Hugging Face copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

from stages._stage import StageArgumentParser, StageError, main_for, stage_config
from stages.gguf_meta import architecture, write_hparams, write_sampling, write_tokenizer
from stages.lora_merge import Adapter, merged_rows
from stages.merge_lora import Progress, check_model_dir
from stages.safetensors_stream import TensorRef, model_tensors, row_chunks
from w4tui.events import EventWriter
from w4tui.fsutil import atomic_path, check_free_space

Q = gguf.GGMLQuantizationType
OUTTYPES = {"f32": (Q.F32, gguf.LlamaFileType.ALL_F32), "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
            "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16), "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}


def build_parser() -> StageArgumentParser:
    p = StageArgumentParser(prog="convert_gguf", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="Hugging Face model directory (base or merged)")
    p.add_argument("--output", required=True, type=Path, help="the .gguf file to write")
    p.add_argument("--outtype", choices=sorted(OUTTYPES), default="f16")
    p.add_argument("--adapter", type=Path, help="merge this LoRA adapter on the fly")
    p.add_argument("--name", help="general.name in the GGUF (default: from the output file name)")
    p.add_argument("--converter", choices=["builtin", "llama.cpp"], default="builtin",
                   help="llama.cpp: run the converter named in [tools] convert_hf_to_gguf instead")
    return p


def tensor_type(ref: TensorRef, outtype: Q) -> Q:
    """llama.cpp's rule: vectors (norms, biases) stay F32; Q8_0 needs rows in whole 32-value blocks."""
    if len(ref.shape) < 2 or outtype == Q.F32:
        return Q.F32
    if outtype == Q.Q8_0 and ref.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return outtype


def encode(rows: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return rows.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return rows.astype(np.float16)
    return gguf.quants.quantize(rows, qtype)  # BF16 and Q8_0, exactly as llama.cpp's converter does


def body(args, events: EventWriter) -> dict:
    if args.output.suffix != ".gguf":
        raise StageError(f"{args.output}: the output must end in .gguf")
    if args.converter == "llama.cpp":
        return _llama_cpp(args, events)
    config = check_model_dir(args.model)
    arch = architecture(config, args.model)
    adapter = Adapter(args.adapter) if args.adapter else None
    refs = model_tensors(args.model)
    if adapter:
        adapter.check_fits({r.name: r for r in refs})
    qtype, ftype = OUTTYPES[args.outtype]
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    plan = []
    for ref in refs:
        name = names.get_name(ref.name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise StageError(f"{args.model}: tensor {ref.name} has no GGUF name for {gguf.MODEL_ARCH_NAMES[arch]}")
        plan.append((ref, name, tensor_type(ref, qtype)))
    out_bytes = sum(_nbytes(ref.shape, t) for ref, _, t in plan)
    check_free_space(args.output.parent, out_bytes + (64 << 20), "the GGUF file")
    lineage = _lineage(args, config)
    progress = Progress(events, out_bytes, len(plan))
    with atomic_path(args.output) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(args.name or args.output.stem)
        write_hparams(writer, config)
        writer.add_file_type(ftype)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_sampling(writer, args.model)
        write_tokenizer(writer, args.model, config["vocab_size"])
        for key, value in lineage.items():
            writer.add_string(key, value)
        if lineage.get("w4tui.base_model"):
            writer.add_base_model_count(1)
            writer.add_base_model_name(0, lineage["w4tui.base_model"])
        for ref, name, t in plan:
            shape = ref.shape if t in (Q.F32, Q.F16) else gguf.quant_shape_to_byte_shape(ref.shape, t)
            dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(t, np.uint8)
            writer.add_tensor_info(name, shape, np.dtype(dtype), _nbytes(ref.shape, t), raw_dtype=t)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _write_data(writer, plan, adapter, progress)
    events.artifact(args.output.resolve(), "gguf", quant=args.outtype.upper(), bytes=args.output.stat().st_size,
                    parent=str((args.adapter or args.model).resolve()), **{k.split(".", 1)[1]: v for k, v in lineage.items()})
    return {"tensors": len(plan), "bytes": args.output.stat().st_size, "outtype": args.outtype}


def _write_data(writer: gguf.GGUFWriter, plan, adapter: Adapter | None, progress: Progress) -> None:
    """Tensor data in the order of the tensor infos, padded as GGUFWriter.write_tensor_data pads."""
    fout = writer.fout[0]
    handles: dict[Path, object] = {}
    try:
        for ref, name, t in plan:
            fh = handles.get(ref.file) or handles.setdefault(ref.file, open(ref.file, "rb"))
            writer.write_padding(fout, fout.tell())
            for start, stop in row_chunks(ref):
                data = encode(merged_rows(adapter, ref, fh, start, stop), t)
                fout.write(data.tobytes())
                progress.add(data.nbytes, name=name)
            writer.write_padding(fout, _nbytes(ref.shape, t))
            progress.add(0, tensors=1, name=name)
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        for fh in handles.values():
            fh.close()
        writer.close()


def _nbytes(shape: tuple[int, ...], t: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[t]
    return int(np.prod(shape)) // block * size


def _lineage(args, config: dict) -> dict[str, str]:
    """Where the weights came from, recorded in the GGUF (w4tui.* keys; llama.cpp ignores them)."""
    out: dict[str, str] = {}
    merge_record = args.model / "w4tui_merge.json"
    if merge_record.exists():
        record = json.loads(merge_record.read_text())
        out["w4tui.base_model"], out["w4tui.adapter"] = record["base_model"], record["adapter"]
    else:
        out["w4tui.base_model"] = str(args.model.resolve())
    if args.adapter:
        out["w4tui.adapter"] = str(args.adapter.resolve())
    return out


def _llama_cpp(args, events: EventWriter) -> dict:
    script = stage_config().tools.convert_hf_to_gguf
    if not script or not Path(script).is_file():
        raise StageError("--converter llama.cpp needs [tools] convert_hf_to_gguf set to llama.cpp's "
                         f"convert_hf_to_gguf.py (now: {script or 'empty'})")
    if args.adapter:
        raise StageError("llama.cpp's converter cannot merge an adapter: run the merge stage first, "
                         "or use the built-in converter")
    with atomic_path(args.output) as tmp:
        proc = subprocess.run([sys.executable, script, str(args.model), "--outfile", str(tmp),
                               "--outtype", args.outtype], stdout=sys.stdout, stderr=sys.stdout)
        if proc.returncode != 0 or not tmp.exists():
            raise StageError(f"llama.cpp's converter failed (exit {proc.returncode}); see the run's output.log")
    events.artifact(args.output.resolve(), "gguf", quant=args.outtype.upper(), parent=str(args.model.resolve()),
                    converter="llama.cpp", bytes=args.output.stat().st_size)
    return {"bytes": args.output.stat().st_size, "converter": "llama.cpp"}


main = main_for("convert", build_parser(), body)

if __name__ == "__main__":
    sys.exit(main())
