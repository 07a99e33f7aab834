"""Train a LoRA adapter on chat data, resumably.

    python -m stages.train_lora --base_model DIR --dataset data/train --output outputs/adapters/NAME
    python -m stages.train_lora ... --resume                 # continue a crashed or cancelled run
    python -m stages.train_lora ... --resume_from ADAPTER    # nightly: start from an adapter, fresh optimizer
    python -m stages.train_lora ... --resume_from ADAPTER --replay 0.2 --replay_dataset data/train
    python -m stages.train_lora ... --gpus 8                 # 8 ranks under torchrun (one per GPU)

Defaults come from the [train] section of the config (W4TUI_CONFIG).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from core import trainsettings
from core.config import TrainConfig, field_problem
from core.errors import StageError, UsageError
from core.events import EventWriter
from core.parsers import StageArgumentParser
from stages.common.outputs import check_output, only_names
from stages.common.stage import run_main, stage_config
from stages.train import backend, launch
from stages.train.data import DataReport, dataset_files, read_records
from stages.weights.hf_model import read_config
from stages.weights.lora_merge import Adapter
from stages.weights.safetensors import model_tensors


def build_parser() -> StageArgumentParser:
    return trainsettings.parser(stage_config())  # the one list of training settings (core/trainsettings.py)


# What this stage writes into --output; a directory holding anything else is not its to write into.
OWN_NAMES = ("adapter_config.json", "adapter_model.safetensors", "training_run.json", "checkpoints", ".final.partial")


def check_args(args) -> None:
    """Everything that can be known before torch loads, so a mistake costs a second, not a night."""
    for name in trainsettings.from_config():  # the same ranges as the [train] keys
        if problem := field_problem(TrainConfig, name, getattr(args, name)):
            raise UsageError(f"--{name} {problem} (got {getattr(args, name)})", hint="see [train] in config.toml")
    if not 1 <= args.nnodes <= 4096 or not 0 <= args.node_rank < args.nnodes:
        raise UsageError(f"--node_rank must be from 0 to --nnodes - 1 (got {args.node_rank} of {args.nnodes})")
    if not 0 <= args.replay < 1:
        raise UsageError(f"--replay must be at least 0 and less than 1 (got {args.replay})")
    check_output(
        args.output,
        "dir",
        inputs=[args.base_model, args.dataset, args.resume_from, args.replay_dataset],
        own=lambda p: only_names(p, OWN_NAMES.__contains__),
        what="the adapter",
    )
    if not (args.base_model / "config.json").is_file():
        raise StageError(
            f"{args.base_model}: not a Hugging Face model directory (no config.json)",
            hint="run the download stage first, or check --base_model",
        )
    read_config(args.base_model)  # valid JSON, or one line naming it
    base = {ref.name: ref for ref in model_tensors(args.base_model)}  # every shard whole, or the shard named
    if args.resume_from:
        if not (args.resume_from / "adapter_config.json").is_file():
            raise StageError(f"{args.resume_from}: not a PEFT adapter (no adapter_config.json)")
        adapter = Adapter(args.resume_from)
        adapter.fh.close()
        adapter.check_fits(base)  # an adapter of another base: both shapes named, not a size-mismatch traceback
    if not args.skip_bad:  # a bad line is named now, before torch and the tokenizer load, not minutes later
        read_records(dataset_files(args.dataset), False, DataReport(), log=lambda message: None)
    else:
        dataset_files(args.dataset)
    taken = [name for name in ("adapter_config.json", "checkpoints") if (args.output / name).exists()]
    if taken and not args.resume:
        # A second run here would mix its checkpoints with the first one's; --resume would pick the wrong one.
        raise StageError(
            f"{args.output}: already holds a training run ({taken[0]})",
            hint="add --resume to continue it, or choose another --output",
        )


def torch_environment() -> None:
    """Settings torch reads when it is imported, so they must be set before."""
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # ops MPS lacks run on the CPU instead of failing
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the tokenizer


def body(args, events: EventWriter, argv: list[str]) -> dict:
    # Every rank: which trainer (mlx asked for where it is not installed; --quantize_base with torch)
    backend.resolve(args)
    if (launch.worker_rank() or 0) == 0:  # once: by the launcher, or rank 0 when torchrun was typed by hand
        check_args(args)
    if launch.needed(args) and not args.eta:
        events.arm()
        return launch.run(args, argv, events)
    torch_environment()
    return backend.train(args, events)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run = lambda args, events: body(args, events, argv)  # noqa: E731
    rank = launch.worker_rank()
    if rank is None:
        return run_main("train", build_parser, run, argv, events=launch.GroupEvents.from_env("train"))
    launch.as_rank(rank)
    events = launch.worker_events("train")
    member = lambda args, events: launch.as_member(rank, events, lambda: run(args, events))  # noqa: E731
    return run_main("train", build_parser, member, argv, events=events)


if __name__ == "__main__":
    sys.exit(main())
