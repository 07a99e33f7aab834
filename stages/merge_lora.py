"""Merge a LoRA adapter into its base model, streaming tensor by tensor from the base's shards.

    python -m stages.merge_lora --adapter outputs/adapters/NAME --base_model DIR --output outputs/merged/NAME

The merged model keeps the base's dtype and shard layout; tokenizer and generation files are carried
over (a merged folder without them is a classic source of broken GGUFs). Peak memory is one row chunk.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from stages._stage import StageArgumentParser, StageError, main_for
from stages.lora_merge import Adapter, merged_rows
from stages.safetensors_stream import SafetensorsWriter, f32_to_bf16, model_tensors, row_chunks
from w4tui.events import EventWriter
from w4tui.fsutil import atomic_path, check_free_space

CARRIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
           "merges.txt", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
           "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def build_parser() -> StageArgumentParser:
    p = StageArgumentParser(prog="merge_lora", description=__doc__.split("\n")[0])
    p.add_argument("--adapter", required=True, type=Path, help="PEFT LoRA adapter directory")
    p.add_argument("--base_model", required=True, type=Path, help="Hugging Face model directory")
    p.add_argument("--output", required=True, type=Path, help="directory for the merged model")
    return p


def check_model_dir(model: Path) -> dict:
    config_file = model / "config.json"
    if not config_file.is_file():
        raise StageError(f"{model}: not a Hugging Face model directory (no config.json)")
    missing = [name for name in TOKENIZER_FILES if not (model / name).is_file()]
    if missing:
        raise StageError(f"{model}: missing tokenizer files: {', '.join(missing)}",
                         hint="copy them from the base model; without them the GGUF cannot tokenize")
    return json.loads(config_file.read_text())


class Progress:
    """Tensor and byte progress, a few events a second at most."""

    def __init__(self, events: EventWriter, total_bytes: int, total_tensors: int) -> None:
        self.events, self.total_bytes, self.total_tensors = events, total_bytes, total_tensors
        self.bytes = self.tensors = 0
        self.last = 0.0

    def add(self, nbytes: int, tensors: int = 0, name: str | None = None) -> None:
        self.bytes += nbytes
        self.tensors += tensors
        now = time.monotonic()
        if now - self.last > 0.25 or self.tensors == self.total_tensors:
            self.last = now
            self.events.progress(self.bytes, self.total_bytes, "bytes", message=name,
                                 tensors_done=self.tensors, tensors_total=self.total_tensors)


def body(args, events: EventWriter) -> dict:
    check_model_dir(args.base_model)
    adapter = Adapter(args.adapter)
    refs = model_tensors(args.base_model)
    adapter.check_fits({r.name: r for r in refs})
    total = sum(r.nbytes for r in refs)
    check_free_space(args.output.parent, total + (64 << 20), "the merged model")
    progress = Progress(events, total, len(refs))
    with atomic_path(args.output) as tmp:
        tmp.mkdir(parents=True)
        by_file: dict[Path, list] = {}
        for ref in refs:
            by_file.setdefault(ref.file, []).append(ref)
        for shard, shard_refs in by_file.items():
            writer = SafetensorsWriter(tmp / shard.name, [(r.name, r.dtype, r.shape) for r in shard_refs])
            with open(shard, "rb") as fh:
                for ref in shard_refs:
                    for start, stop in row_chunks(ref):
                        rows = merged_rows(adapter, ref, fh, start, stop)
                        writer.write(_encode(rows, ref.dtype))
                        progress.add(ref.nbytes * (stop - start) // ref.rows, name=ref.name)
                    progress.add(0, tensors=1, name=ref.name)
            writer.close()
        for name in CARRIED:
            if (args.base_model / name).is_file():
                shutil.copyfile(args.base_model / name, tmp / name)
        (tmp / "w4tui_merge.json").write_text(json.dumps(
            {"base_model": str(args.base_model.resolve()), "adapter": str(args.adapter.resolve()),
             "lora_modules": len(adapter.pairs), "replaced": sorted(adapter.replacements)}, indent=2) + "\n")
    events.artifact(args.output.resolve(), "merged", parent=str(args.adapter.resolve()),
                    base_model=str(args.base_model.resolve()), bytes=total)
    return {"tensors": len(refs), "bytes": total, "lora_modules": len(adapter.pairs)}


def _encode(rows, dtype: str):
    if dtype == "BF16":
        return f32_to_bf16(rows)
    return rows.astype("float16" if dtype == "F16" else "float32")


main = main_for("merge", build_parser(), body)

if __name__ == "__main__":
    sys.exit(main())
