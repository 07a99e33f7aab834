"""Merge a LoRA adapter into its base model, streaming tensor by tensor from the base's shards.

    python -m stages.merge_lora --adapter outputs/adapters/NAME --base_model DIR --output outputs/merged/NAME

The merged model keeps the base's shard layout and (by default) its dtype; tokenizer and generation
files are carried over (a merged folder without them is a classic source of broken GGUFs). The result
equals PEFT's ``merge_and_unload()`` + ``save_pretrained()``; peak memory is one row chunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# Before numpy loads: the chunk workers already use every core, and OpenBLAS's own threads competing
# with them made the merge 2-3x slower on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import logging
import shutil
import sys
from pathlib import Path

from core import parsers
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_path, check_free_space
from core.parsers import StageArgumentParser
from stages.common.outputs import check_output, only_names
from stages.common.stage import run_main
from stages.weights.halfprec import convert
from stages.weights.hf_model import CARRIED, MERGE_RECORD, missing_tokenizer_files, read_config
from stages.weights.lora_merge import Adapter, merged_rows
from stages.weights.safetensors import DTYPES, SafetensorsWriter, model_tensors, row_chunks
from stages.weights.streaming import Progress, ordered_map

log = logging.getLogger(__name__)
OUT_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
INDEX = "model.safetensors.index.json"
TORCH_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def build_parser() -> StageArgumentParser:
    return parsers.merge()


def merged_before(path: Path) -> bool:
    """A directory this stage wrote (its record is there) holding only what the stage writes."""
    return (path / MERGE_RECORD).is_file() and only_names(
        path, lambda n: n in CARRIED or n in (MERGE_RECORD, INDEX) or n.endswith(".safetensors")
    )


def body(args, events: EventWriter) -> dict:
    check_output(args.output, "dir", inputs=[args.base_model, args.adapter], own=merged_before, what="the merged model")
    with atomic_path(args.output) as tmp:
        summary = merge_to(args.base_model, args.adapter, tmp, args.dtype, events)
    events.artifact(
        args.output.resolve(),
        "merged",
        parent=str(args.adapter.resolve()),
        base_model=str(args.base_model.resolve()),
        bytes=summary["bytes"],
    )
    return summary


def merge_to(base_model: Path, adapter_dir: Path, out: Path, dtype: str, events: EventWriter) -> dict:
    """Write the merged model into the new directory ``out``; the caller makes it appear atomically."""
    config = read_config(base_model)
    adapter = Adapter(adapter_dir)
    missing = missing_tokenizer_files(base_model, adapter_dir)
    if missing:
        raise StageError(
            f"{base_model}: missing tokenizer files: {', '.join(missing)}",
            hint="download the base model again; without them the merged model cannot be converted",
        )
    _warn_other_base(adapter, base_model)
    refs = model_tensors(base_model)
    adapter.check_fits({r.name: r for r in refs})
    out_dtype = {r.name: OUT_DTYPES.get(dtype, r.dtype) for r in refs}
    sizes = {r.name: r.nbytes // DTYPES[r.dtype][1] * DTYPES[out_dtype[r.name]][1] for r in refs}
    total = sum(sizes.values())
    check_free_space(out.parent, total + (64 << 20), "the merged model")
    progress = Progress(events, total, len(refs))
    out.mkdir(parents=True)
    by_file: dict[Path, list] = {}
    for ref in refs:
        by_file.setdefault(ref.file, []).append(ref)
    for shard, shard_refs in by_file.items():
        writer = SafetensorsWriter(out / shard.name, [(r.name, out_dtype[r.name], r.shape) for r in shard_refs])
        with open(shard, "rb") as fh:

            def chunk(job):
                ref, start, stop = job
                return convert(merged_rows(adapter, ref, fh, start, stop), ref.dtype, out_dtype[ref.name])

            jobs = ((ref, start, stop) for ref in shard_refs for start, stop in row_chunks(ref))
            for (ref, start, stop), data in ordered_map(chunk, jobs):
                writer.write(data)
                progress.add(data.nbytes, tensors=int(stop == ref.rows), name=ref.name)
        writer.close()
    _carry_files(base_model, adapter_dir, out)
    _write_config(config, dtype, base_model, out)
    if len(by_file) > 1:
        _write_index(out, refs, sizes, total)
    (out / MERGE_RECORD).write_text(
        json.dumps(
            {
                "base_model": str(base_model.resolve()),
                "adapter": str(adapter_dir.resolve()),
                "lora_modules": len(adapter.pairs),
                "replaced": sorted(adapter.replacements),
            },
            indent=2,
        )
        + "\n"
    )
    return {"tensors": len(refs), "bytes": total, "lora_modules": len(adapter.pairs)}


def _warn_other_base(adapter: Adapter, base: Path) -> None:
    """A different path is fine (a copied model); the shape check decides whether it fits."""
    named = adapter.config.get("base_model_name_or_path")
    if named and Path(named).name != base.name and Path(named).resolve() != base.resolve():
        log.warning("adapter %s was trained on %s; merging into %s", adapter.path, named, base)


def _carry_files(base: Path, adapter: Path, out: Path) -> None:
    for name in CARRIED:
        source = base / name if (base / name).is_file() else adapter / name
        if source.is_file() and name != "config.json":
            shutil.copyfile(source, out / name)


def _write_config(config: dict, dtype: str, base: Path, out: Path) -> None:
    if dtype == "auto":
        shutil.copyfile(base / "config.json", out / "config.json")
        return
    for key in ("torch_dtype", "dtype"):  # say which dtype the weights now have (transformers reads either)
        if key in config or key == "torch_dtype":
            config[key] = TORCH_NAMES[OUT_DTYPES[dtype]]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _write_index(out: Path, refs, sizes: dict[str, int], total: int) -> None:
    index = {"metadata": {"total_size": total}, "weight_map": {r.name: r.file.name for r in refs}}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("merge", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
