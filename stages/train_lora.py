"""Train a LoRA adapter on chat data, resumably.

    python -m stages.train_lora --base_model DIR --dataset data/train --output outputs/adapters/NAME
    python -m stages.train_lora ... --resume                 # continue a crashed or cancelled run
    python -m stages.train_lora ... --resume_from ADAPTER    # nightly: start from an adapter, fresh optimizer
    python -m stages.train_lora ... --resume_from ADAPTER --replay 0.2 --replay_dataset data/train
    python -m stages.train_lora ... --gpus 8                 # 8 ranks under torchrun (one per GPU)

Defaults come from the [train] section of the config (W4TUI_CONFIG).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import SHARDS, TrainConfig, field_problem
from core.errors import StageError, UsageError
from core.events import EventWriter
from stages.common.outputs import check_output, only_names
from stages.common.stage import StageArgumentParser, run_main, stage_config
from stages.train import backend, launch
from stages.train.data import DataReport, dataset_files, read_records
from stages.weights.hf_model import read_config
from stages.weights.lora_merge import Adapter
from stages.weights.safetensors import model_tensors


def build_parser() -> StageArgumentParser:
    t = stage_config().train
    p = StageArgumentParser(prog="train_lora", description=__doc__.split("\n")[0])
    p.add_argument("--base_model", required=True, type=Path, help="Hugging Face model directory")
    p.add_argument("--dataset", required=True, type=Path, help=".jsonl file or directory of .jsonl files")
    p.add_argument("--output", required=True, type=Path, help="adapter directory (checkpoints go inside)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--resume_from", type=Path, help="start from this adapter with a fresh optimizer (nightly)")
    p.add_argument(
        "--replay",
        type=float,
        default=0.0,
        help="share of the mixed training set drawn from the main dataset (limits forgetting)",
    )
    p.add_argument("--replay_dataset", type=Path, help="the main dataset to replay from (default: [paths] data)")
    p.add_argument(
        "--profile",
        choices=["dry", "mini", "full"],
        default="full",
        help="train on 100 (dry), 3,000 (mini) or all (full) samples of --dataset, drawn at random",
    )
    p.add_argument(
        "--eta",
        action="store_true",
        help="only say how long the run would take (the rate of the last run on this device with the same "
        "settings, else a few calibration steps on the real model) and train nothing",
    )
    p.add_argument("--lora_r", type=int, default=t.lora_r)
    p.add_argument("--lora_alpha", type=float, default=t.lora_alpha)
    p.add_argument("--lora_dropout", type=float, default=t.lora_dropout)
    p.add_argument("--target_modules", nargs="+", default=t.target_modules)
    p.add_argument("--epochs", type=float, default=t.epochs)
    p.add_argument("--learning_rate", type=float, default=t.learning_rate)
    p.add_argument("--max_seq_length", type=int, default=t.max_seq_length)
    p.add_argument("--overlong", choices=["truncate", "drop"], default=t.overlong)
    p.add_argument("--batch_size", type=int, default=t.batch_size)
    p.add_argument("--gradient_accumulation", type=int, default=t.gradient_accumulation)
    p.add_argument("--gradient_checkpointing", action=_BoolFlag, default=t.gradient_checkpointing)
    p.add_argument(
        "--batching",
        choices=["pack", "group", "pad"],
        default=t.batching,
        help="pack: random batches packed without cross-attention; group: by length; pad: random, padded",
    )
    p.add_argument("--checkpoint_every", type=int, default=t.checkpoint_every)
    p.add_argument("--log_every", type=int, default=t.log_every)
    p.add_argument("--eval_fraction", type=float, default=t.eval_fraction)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--device", choices=["auto", "mps", "cuda", "cpu"], default=t.device)
    p.add_argument(
        "--gpus",
        type=int,
        default=t.gpus,
        help="ranks on this machine, one per GPU, under torchrun (on a CPU: processes, for tests)",
    )
    p.add_argument(
        "--shard",
        choices=SHARDS,
        default=t.shard,
        help="with --gpus above 1: ddp (the whole base on every GPU) or fsdp (1/N of it each, for a base that "
        "does not fit one GPU)",
    )
    p.add_argument("--nnodes", type=int, default=1, help="machines in the group (torchrun --nnodes)")
    p.add_argument("--node_rank", type=int, default=0, help="this machine's place in the group, 0 to nnodes-1")
    p.add_argument("--rdzv_endpoint", help="HOST:PORT of node 0, the same on every node (torchrun --rdzv_endpoint)")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "mlx"],
        default=t.backend,
        help="auto: mlx on Apple Silicon when installed, else torch (see stages/train/backend.py)",
    )
    p.add_argument(
        "--quantize_base",
        type=int,
        choices=[0, 4, 8],
        default=None,
        help="mlx: the frozen base in 4 or 8 bits (QLoRA) or 0 (bf16); default [train] quantize_base",
    )
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true", help="skip malformed lines instead of stopping")
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", default=t.cache, help="do not cache the tokenized data"
    )
    return p


class _BoolFlag(argparse.Action):
    """--gradient_checkpointing / --no_gradient_checkpointing style switch (--no-... works too)."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings + [s.replace("--", "--no_", 1) for s in option_strings], dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))


# What this stage writes into --output; a directory holding anything else is not its to write into.
OWN_NAMES = ("adapter_config.json", "adapter_model.safetensors", "training_run.json", "checkpoints", ".final.partial")
RANGED = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "learning_rate",
    "epochs",
    "max_seq_length",
    "batch_size",
    "gradient_accumulation",
    "checkpoint_every",
    "log_every",
    "eval_fraction",
    "seed",
    "gpus",
)


def check_args(args) -> None:
    """Everything that can be known before torch loads, so a mistake costs a second, not a night."""
    for name in RANGED:  # the same ranges as the [train] keys
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
