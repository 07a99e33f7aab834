"""Measure what conversion and each quantization cost: perplexity, KL divergence against F16, top-1
agreement, size and llama.cpp speed, on held-out samples tokenized exactly as training did.

    python -m stages.evaluate --gguf outputs/gguf/BUILD-f16.gguf [--types Q8_0 Q4_K_M] [--data held-out.jsonl]

Rows: the transformers base model with the build's adapter, the F16 GGUF (the reference), then each
type, quantized into a temporary file (or the build's own file of that type when there is one). The
scratch files are removed however the eval ends. A build made in one pass (convert --outtype Q4_K_M: no
F16 on disk) gets its F16 made again from its base and adapter, as a scratch file, and the log says so.
The table goes to ``BUILD-eval.json`` beside the build and into the artifact event. Defaults come from [eval].
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import evaltable, parsers
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_write_text
from core.gguf_header import UNQUANTIZED, NotGGUF, read_info
from core.parsers import StageArgumentParser
from stages.common.stage import run_main, stage_config
from stages.evaluation import llama_run
from stages.evaluation import samples as eval_samples
from stages.evaluation.metrics import Scores
from stages.evaluation.scratch import Reference, quantize, scratch_dir
from stages.quantize import find_backend


def build_parser() -> StageArgumentParser:
    return parsers.evaluate(stage_config())


def find_f16(path: Path) -> tuple[Path, dict, bool]:
    """The build's unquantized GGUF (``path`` itself, or the F16 beside a quantized one), its keys and
    whether it is on disk: a one-pass build has none, but its lineage keys say how to make it."""
    try:
        info = read_info(path, tensors=False)
    except FileNotFoundError:
        raise StageError(f"{path}: no such file", hint="run the convert stage first") from None
    except NotGGUF as exc:
        raise StageError(f"{exc} (a readable GGUF file is needed)") from None
    if info.file_type in UNQUANTIZED:
        return path, info.kv, True
    stem = path.name.removesuffix(".gguf")
    stem = stem[: -len(info.file_type) - 1] if stem.upper().endswith("-" + info.file_type) else stem
    for suffix in ("-f16", "-bf16", "-f32"):
        candidate = path.with_name(stem + suffix + ".gguf")
        if candidate.is_file():
            return find_f16(candidate)
    if info.kv.get("w4tui.base_model"):
        return path.with_name(stem + "-f16.gguf"), info.kv, False
    raise StageError(
        f"{path} is {info.file_type}; its F16 GGUF ({stem}-f16.gguf) is not beside it",
        hint="pass the F16 GGUF the convert stage wrote with --gguf",
    )


def _lineage(args, kv: dict) -> tuple[Path | None, Path | None]:
    base = args.base_model or (Path(kv["w4tui.base_model"]) if kv.get("w4tui.base_model") else None)
    adapter = args.adapter or (Path(kv["w4tui.adapter"]) if kv.get("w4tui.adapter") else None)
    if base is not None and not (base / "config.json").is_file():
        raise StageError(
            f"{base}: the base model of this build is not there (no config.json)", hint="pass --base_model DIR"
        )
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise StageError(f"{adapter}: the adapter of this build is not there", hint="pass --adapter DIR")
    return base, adapter


def load_data(args, base: Path | None, adapter: Path | None, events: EventWriter):
    if base is None:
        raise StageError(
            "this GGUF names no base model (w4tui.base_model), so it cannot be tokenized as training did",
            hint="pass --base_model DIR",
        )
    from transformers import AutoTokenizer  # transformers only for an HF row, after the arguments are good

    tokenizer = AutoTokenizer.from_pretrained(base)
    log = lambda message: events.log(message, level="warning")  # noqa: E731
    if args.data:
        t = stage_config().train
        if adapter is not None and (adapter / eval_samples.RECORD).is_file():
            run = eval_samples.training_args(adapter)
            t = run  # the run's own length settings, so samples are cut where training cut them
        return eval_samples.from_files(args.data, tokenizer, t.max_seq_length, t.overlong, log)
    if adapter is None:
        raise StageError(
            "this build has no adapter, so there is no training eval split to score",
            hint="set [eval] data (or --data) to a JSONL file of held-out samples",
        )
    return eval_samples.train_eval_split(adapter, tokenizer, log)


def body(args, events: EventWriter) -> dict:
    if args.max_tokens <= 0:
        raise StageError(f"--max_tokens must be greater than 0 (got {args.max_tokens})")
    started = time.perf_counter()
    f16, kv, on_disk = find_f16(args.gguf)
    output = args.output or evaltable.eval_path(f16)
    base, adapter = _lineage(args, kv)
    data = load_data(args, base, adapter, events)
    data, left_out = eval_samples.cap_tokens(data, args.max_tokens)
    events.log(
        f"{data.scored_tokens} scored tokens in {len(data.samples)} samples of {data.source}"
        + (f" ({left_out} more samples left out by [eval] max_tokens)" if left_out else "")
    )
    rows: list[dict] = []
    steps = len(data.samples) * (len(args.types) + 1 + bool(args.transformers))
    done = 0

    def advance(message: str):
        nonlocal done
        done += 1
        events.progress(done, steps, "samples", message=message)

    if args.transformers:
        from stages.evaluation import hf_row  # torch: only when the table has an HF row

        row = {"name": "transformers", "kind": "transformers", "adapter": str(adapter) if adapter else None}
        row.update(hf_row.perplexity(base, adapter, data.samples, args.device, lambda i: advance("transformers")))
        rows.append(row)
    with scratch_dir(f16.parent) as tmp:
        source = f16 if on_disk else f16_on_demand(args.gguf, base, adapter, kv, tmp / f16.name, events)
        n_ctx = llama_run.context_for(data.samples)
        row, reference = _score(
            _file_type(source) or "F16", source, data.samples, n_ctx, args.threads, advance, None, tmp
        )
        rows.append(row)
        for qtype in args.types:
            rows.append(_quantized_row(qtype, f16, source, data.samples, n_ctx, args, advance, reference, tmp, events))
    doc = {
        "version": evaltable.VERSION,
        "build": evaltable.build_stem(f16),
        "f16": str(f16.resolve()),
        "f16_scratch": not on_disk,  # made for this eval and removed
        "created": time.time(),
        "seconds": round(time.perf_counter() - started, 3),
        "data": {
            "source": data.source,
            "files": data.files,
            "samples": len(data.samples),
            "scored_tokens": data.scored_tokens,
            "left_out_samples": left_out,
        },
        "adapter": str(adapter) if adapter else None,
        "base_model": str(base) if base else None,
        "rows": rows,
    }
    atomic_write_text(output, json.dumps(doc, indent=1) + "\n")
    for line in evaltable.format_table(doc):
        events.log(line)
        print(line, flush=True)
    flat = {f"{r['name']}_{k}": r.get(k) for r in rows for k in ("ppl", "kl_mean", "kl_p99", "top1", "bytes")}
    events.artifact(output.resolve(), "eval", parent=str(f16.resolve()), types=list(args.types), **flat)
    return {
        "report": str(output.resolve()),
        "samples": len(data.samples),
        "scored_tokens": data.scored_tokens,
        "seconds": doc["seconds"],
    }


def _score(
    name: str, path: Path, samples, n_ctx: int, threads: int, advance, reference: Reference | None, tmp: Path
) -> tuple[dict, Reference]:
    """Score one GGUF against ``reference``; without one, this GGUF is the reference and is stored."""
    started = time.perf_counter()
    llm = llama_run.load(path, n_ctx, threads)
    is_reference = reference is None
    scores = Scores()
    try:
        if reference is None:
            counts = [len(llama_run.scored_positions(s.labels)[1]) for s in samples]
            reference = Reference(tmp, counts, llm.n_vocab())
        for i, sample in enumerate(samples):
            logits, targets = llama_run.scored_logits(llm, sample)
            if is_reference:
                reference.put(i, logits)
            scores.add(logits, targets, reference.get(i))
            advance(name)
    finally:
        llm.close()
    figures = llama_run.speed(path, [int(t) for t in samples[0].ids], threads)
    row = {
        "name": name,
        "kind": "gguf",
        "reference": is_reference,
        "bytes": path.stat().st_size,
        **scores.summary(),
        **figures,
        "eval_s": round(time.perf_counter() - started, 3),
    }
    row["seconds"] = row["eval_s"]  # a quantized row adds its quantize_s
    return row, reference


def _quantized_row(
    qtype: str,
    f16: Path,
    source: Path,
    samples,
    n_ctx: int,
    args,
    advance,
    reference: Reference,
    tmp: Path,
    events: EventWriter,
) -> dict:
    """The build's own file of this type when quantize or convert made one, else a temporary one quantized
    from ``source`` (the F16 at ``f16``, or its scratch copy)."""
    own = f16.with_name(f"{evaltable.build_stem(f16)}-{qtype}.gguf")  # the quantize stage's name for it
    quantize_s = 0.0
    if own.is_file() and _file_type(own) == qtype:
        path, temporary = own, False
        events.log(f"{qtype}: scoring the build's own {own.name}")
    else:
        path, temporary = tmp / f"{qtype}.gguf", True
        events.log(f"{qtype}: quantizing {f16.name} into a temporary file")
        started = time.perf_counter()
        quantize(_quantizer(), source, path, qtype, args.threads)
        quantize_s = time.perf_counter() - started
    try:
        row, _ = _score(qtype, path, samples, n_ctx, args.threads, advance, reference, tmp)
    finally:
        if temporary:
            path.unlink(missing_ok=True)  # free the disk before the next type
    row.update(
        file=None if temporary else str(own.resolve()),
        quantize_s=round(quantize_s, 3),
        seconds=round(row["eval_s"] + quantize_s, 3),
    )
    return row


def f16_on_demand(build: Path, base: Path | None, adapter: Path | None, kv: dict, out: Path, events) -> Path:
    """The F16 GGUF the night would have kept, made again by the convert stage (a child, with its own
    events off) from the build's base and adapter, into the eval's scratch directory."""
    if base is None:
        raise StageError(f"{build}: no F16 GGUF beside it and no base model to make one", hint="pass --base_model DIR")
    events.log(
        f"{build.name} has no F16 GGUF beside it (made in one pass): converting {base.name}"
        + (f" + {adapter.name}" if adapter else "")
        + " into a scratch F16 file for this eval; it is removed when the eval ends"
    )
    cmd = [sys.executable, "-m", "stages.convert_gguf", "--model", str(base), "--output", str(out)]
    cmd += ["--adapter", str(adapter)] if adapter else []
    cmd += ["--name", str(kv["general.name"])] if kv.get("general.name") else []
    env = {k: v for k, v in os.environ.items() if k not in ("W4TUI_EVENTS", "W4TUI_RUN_ID")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        reason = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), proc.stderr[-200:])
        raise StageError(f"making the scratch F16 GGUF failed: {reason.removeprefix('error: ')}")
    return out


def _file_type(path: Path) -> str | None:
    try:
        return read_info(path, tensors=False).file_type
    except (OSError, NotGGUF):
        return None


def _quantizer() -> list[str]:
    backend = find_backend(stage_config().tools.llama_quantize)
    if backend is None:
        raise StageError("no llama.cpp quantizer found for the temporary files", hint="pip install llama-cpp-python")
    return backend.command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the eval stage; see the module docstring."""
    return run_main("eval", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
