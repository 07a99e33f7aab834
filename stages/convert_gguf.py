"""Convert a Hugging Face Qwen2 model to GGUF, optionally merging a LoRA adapter in the same pass.

    python -m stages.convert_gguf --model DIR --output model-f16.gguf [--outtype f16|bf16|f32|q8_0]
    python -m stages.convert_gguf --model BASE --adapter ADAPTER --output nightly-f16.gguf
    python -m stages.convert_gguf --model BASE --adapter ADAPTER --output nightly-Q4_K_M.gguf --outtype Q4_K_M

Tensors stream from the safetensors shards in row chunks straight into the GGUF file (written under a
temporary name, fsynced, then renamed), so memory stays at one chunk whatever the model size and the
nightly loop never writes a merged Hugging Face copy. A llama.cpp file type (Q4_K_M, Q8_0, ...) is
quantized in the same pass with ggml's routines (stages.quant.onepass): byte for byte the file
llama-quantize makes from the F16 GGUF, without that F16 file. ``--converter llama.cpp`` runs llama.cpp's own
convert_hf_to_gguf.py (``[tools] convert_hf_to_gguf``) instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# Before numpy loads: the chunk workers already use every core, and OpenBLAS's own threads competing
# with them made the merge 2-3x slower on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

from core import parsers
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_path, check_free_space, scratch_dir
from core.gguf_header import written_by_w4tui
from core.parsers import StageArgumentParser
from stages.common.outputs import check_output
from stages.common.stage import run_main, stage_config
from stages.ggufio.meta import architecture, write_metadata
from stages.ggufio.tensors import TensorPlan, plan_tensors
from stages.ggufio.writer import StreamingGGUFWriter
from stages.quant.onepass import QUANT_OUTTYPES, quantized_plan, set_file_type
from stages.weights.hf_model import MERGE_RECORD, check_model_dir
from stages.weights.lora_merge import Adapter, merged_rows
from stages.weights.safetensors import model_tensors
from stages.weights.streaming import Progress, ordered_map


def build_parser() -> StageArgumentParser:
    return parsers.convert()


def body(args, events: EventWriter) -> dict:
    check_output(args.output, "file", inputs=[args.model, args.adapter], own=written_by_w4tui, what="the GGUF")
    if args.output.suffix != ".gguf":
        raise StageError(f"{args.output}: the output must end in .gguf")
    if args.adapter and (args.model / MERGE_RECORD).exists():
        raise StageError(
            f"{args.model} already has an adapter merged in ({MERGE_RECORD}); merging "
            f"{args.adapter} on top would apply a second delta",
            hint="pass the base model with --adapter",
        )
    onepass = args.outtype in QUANT_OUTTYPES
    if args.converter == "llama.cpp":
        if onepass:
            raise StageError(
                f"--outtype {args.outtype} is quantized by the builtin converter only",
                hint="use --converter builtin, or convert to f16 and run the quantize stage",
            )
        return _llama_cpp(args, events)
    config = check_model_dir(args.model)
    arch = architecture(config, args.model)
    adapter = Adapter(args.adapter) if args.adapter else None
    refs = model_tensors(args.model)
    if adapter:
        adapter.check_fits({r.name: r for r in refs})
    stored = "f16" if onepass else args.outtype  # one pass: the F16 file llama-quantize would read
    plan = plan_tensors(refs, arch, config, stored, args.model)
    fell_back = 0
    if onepass:
        plan, fell_back = quantized_plan(plan, args.outtype, config)
    out_bytes = sum(t.nbytes for t in plan)
    check_free_space(args.output.parent, out_bytes + (64 << 20), "the GGUF file")
    lineage = _lineage(args)
    progress = Progress(events, out_bytes, len(plan))
    with atomic_path(args.output) as tmp:
        writer = StreamingGGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        write_metadata(
            writer,
            arch,
            config,
            args.model,
            stored,
            plan,
            name=args.name or (args.adapter or args.model).name,
            lineage=lineage,
        )
        if onepass:
            set_file_type(writer, args.outtype)
        for t in plan:
            writer.add_tensor_info(t.name, t.byte_shape, t.np_dtype, t.nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _write_data(writer, plan, adapter, progress)
    size = args.output.stat().st_size
    events.artifact(
        args.output.resolve(),
        "gguf",
        parent=str((args.adapter or args.model).resolve()),
        quant=args.outtype.upper(),
        bytes=size,
        converter="builtin",
        **({"quantized_from": "F16", "fallback_tensors": fell_back} if onepass else {}),
        **lineage,
    )
    return {"tensors": len(plan), "bytes": size, "outtype": args.outtype}


def _write_data(
    writer: StreamingGGUFWriter, plan: list[TensorPlan], adapter: Adapter | None, progress: Progress
) -> None:
    """Tensor data in the order of the tensor infos; the writer checks that order and every size."""
    handles = {path: open(path, "rb") for path in {t.ref.file for t in plan}}

    def chunk(job: tuple[TensorPlan, int, int]) -> np.ndarray:
        t, start, stop = job
        return t.encode(merged_rows(adapter, t.ref, handles[t.ref.file], start, stop))

    jobs = ((t, start, stop) for t in plan for start, stop in t.chunks())
    try:
        for (t, start, stop), data in ordered_map(chunk, jobs):
            if start == 0:
                writer.begin_tensor(t.name)
            writer.write_rows(data)
            progress.add(data.nbytes, name=t.name)
            if stop == t.ref.rows:
                writer.end_tensor()
                progress.add(0, tensors=1, name=t.name)
        writer.finish()
    finally:
        for fh in handles.values():
            fh.close()
        writer.close()


def _lineage(args) -> dict[str, str]:
    """Where the weights came from: flat fields for the artifact event, w4tui.* keys in the GGUF."""
    out = {"base_model": str(args.model.resolve())}
    record = args.model / MERGE_RECORD
    if record.exists():
        try:
            merged = json.loads(record.read_text())
            out = {"base_model": merged["base_model"], "adapter": merged["adapter"]}
        except (ValueError, KeyError):
            pass
    if args.adapter:
        out["adapter"] = str(args.adapter.resolve())
    return out


def _llama_cpp(args, events: EventWriter) -> dict:
    """llama.cpp's converter; with --adapter the merge stage's code writes a temporary merged copy first."""
    script = stage_config().tools.convert_hf_to_gguf
    if not script or not Path(script).is_file():
        raise StageError(
            "--converter llama.cpp needs [tools] convert_hf_to_gguf set to llama.cpp's "
            f"convert_hf_to_gguf.py (now: {script or 'empty'})",
            hint="or use --converter builtin",
        )
    check_model_dir(args.model)
    lineage = _lineage(args)
    with (
        scratch_dir(args.output) as scratch,  # a killed run's merged copy is reclaimed by the next
        atomic_path(args.output) as tmp,
    ):
        model = args.model
        if args.adapter:
            from stages.merge_lora import merge_to

            model = Path(scratch) / "merged"
            merge_to(args.model, args.adapter, model, "auto", events)
        cmd = [sys.executable, script, str(model), "--outfile", str(tmp), "--outtype", args.outtype]
        if args.name:
            cmd += ["--model-name", args.name]
        events.log("running " + " ".join(cmd))
        proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stdout)
        if proc.returncode != 0 or not tmp.exists():
            raise StageError(f"llama.cpp's converter failed (exit {proc.returncode})", hint="see the run's output.log")
    size = args.output.stat().st_size
    events.artifact(
        args.output.resolve(),
        "gguf",
        parent=str((args.adapter or args.model).resolve()),
        quant=args.outtype.upper(),
        bytes=size,
        converter="llama.cpp",
        **lineage,
    )
    return {"bytes": size, "outtype": args.outtype, "converter": "llama.cpp"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("convert", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
