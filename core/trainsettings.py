"""The train stage's settings, in one list: each one's flag, type, default (the [train] key of the same
name, or its own) and help, and which views show it. The stage's parser (``parser``), the night's record
of a build (w4tui/nightly/record.py HPARAMS), the compare view (w4tui/ui/sources/compare.py), the ETA's
cost key (core/eta.py COST_ARGS), the exact-resume check (stages/train/setup.py TRAJECTORY) and the
train form (w4tui/ui/screens/launch.py) all read it, so a new setting is one line here (plus its [train]
key in core/config.py and config.toml when the config sets it). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import SHARDS, Config
from core.parsers import BoolFlag, StageArgumentParser

# The views a setting can be in.
RECORD = "record"  # the build's hyper-parameters in the night's ledger (training_run.json keeps them all)
COMPARE = "compare"  # a row of the Artifacts pane's compare view
COST = "cost"  # decides what one trained token costs: a rate measured with other values does not apply
RESUME = "resume"  # changes what the run computes: --resume refuses other values than the checkpoint's
FORM = "form"  # a field of the TUI's train form, filled with the config's value


@dataclass(frozen=True)
class Setting:
    name: str  # the flag is --name (unless ``flag`` says otherwise) and the parsed args' attribute
    views: frozenset[str] = frozenset()
    help: str | None = None
    config: bool = False  # the default is [train] <name>, and the flag is held to that key's range
    flag: str | None = None
    argparse: dict[str, Any] = field(default_factory=dict)  # type, choices, nargs, default, action, ...

    @property
    def option(self) -> str:
        return self.flag or f"--{self.name}"


def _s(name: str, *views: str, help: str | None = None, config: bool = False, flag: str | None = None, **kw) -> Setting:
    return Setting(name, frozenset(views), help, config, flag, kw)


SETTINGS: tuple[Setting, ...] = (
    _s("base_model", required=True, type=Path, help="Hugging Face model directory"),
    _s("dataset", required=True, type=Path, help=".jsonl file or directory of .jsonl files"),
    _s("output", required=True, type=Path, help="adapter directory (checkpoints go inside)"),
    _s("resume", action="store_true", help="continue from the newest checkpoint in --output"),
    _s("resume_from", RESUME, type=Path, help="start from this adapter with a fresh optimizer (nightly)"),
    _s(
        "replay",
        RECORD,
        COMPARE,
        RESUME,
        type=float,
        default=0.0,
        help="share of the mixed training set drawn from the main dataset (limits forgetting)",
    ),
    _s("replay_dataset", type=Path, help="the main dataset to replay from (default: [paths] data)"),
    _s(
        "profile",
        COMPARE,
        RESUME,
        choices=["dry", "mini", "full"],
        default="full",
        help="train on 100 (dry), 3,000 (mini) or all (full) samples of --dataset, drawn at random",
    ),
    _s(
        "eta",
        action="store_true",
        help="only say how long the run would take (the rate of the last run on this device with the same "
        "settings, else a few calibration steps on the real model) and train nothing",
    ),
    _s("epochs", RECORD, COMPARE, RESUME, FORM, config=True, type=float),
    _s("learning_rate", RECORD, COMPARE, RESUME, FORM, config=True, type=float),
    _s("lora_r", RECORD, COMPARE, COST, RESUME, FORM, config=True, type=int),
    _s("lora_alpha", RECORD, COMPARE, RESUME, FORM, config=True, type=float),
    _s("lora_dropout", RECORD, COMPARE, RESUME, config=True, type=float),
    _s("target_modules", COST, RESUME, config=True, nargs="+"),
    _s("max_seq_length", RECORD, COMPARE, COST, RESUME, FORM, config=True, type=int),
    _s("overlong", RESUME, config=True, choices=["truncate", "drop"]),
    _s("batch_size", RECORD, COMPARE, COST, RESUME, FORM, config=True, type=int),
    _s("gradient_accumulation", RECORD, COMPARE, COST, RESUME, FORM, config=True, type=int),
    _s("gradient_checkpointing", COST, config=True, action=BoolFlag),
    _s(
        "batching",
        COMPARE,
        COST,
        RESUME,
        config=True,
        choices=["pack", "group", "pad"],
        help="pack: random batches packed without cross-attention; group: by length; pad: random, padded",
    ),
    _s("checkpoint_every", config=True, type=int),
    _s("log_every", config=True, type=int),
    _s("eval_fraction", RESUME, FORM, config=True, type=float),
    _s("seed", RECORD, COMPARE, RESUME, config=True, type=int),
    _s("device", config=True, choices=["auto", "mps", "cuda", "cpu"]),
    _s(
        "gpus",
        config=True,
        type=int,
        help="ranks on this machine, one per GPU, under torchrun (on a CPU: processes, for tests)",
    ),
    _s(
        "shard",
        config=True,
        choices=SHARDS,
        help="with --gpus above 1: ddp (the whole base on every GPU) or fsdp (1/N of it each, for a base that "
        "does not fit one GPU)",
    ),
    _s("nnodes", type=int, default=1, help="machines in the group (torchrun --nnodes)"),
    _s("node_rank", type=int, default=0, help="this machine's place in the group, 0 to nnodes-1"),
    _s("rdzv_endpoint", help="HOST:PORT of node 0, the same on every node (torchrun --rdzv_endpoint)"),
    _s(
        "backend",
        RESUME,  # a checkpoint is one backend's (optimizer state, base precision)
        config=True,
        choices=["auto", "torch", "mlx"],
        help="auto: mlx on Apple Silicon when installed, else torch (see stages/train/backend.py)",
    ),
    _s(
        "quantize_base",
        RESUME,
        type=int,
        choices=[0, 4, 8],
        default=None,  # the backend decides: [train] quantize_base for mlx, refused with torch
        help="mlx: the frozen base in 4 or 8 bits (QLoRA) or 0 (bf16); default [train] quantize_base",
    ),
    _s("skip_bad", flag="--skip-bad", action="store_true", help="skip malformed lines instead of stopping"),
    _s("cache", flag="--no-cache", config=True, action="store_false", help="do not cache the tokenized data"),
)
BY_NAME = {s.name: s for s in SETTINGS}


def names(view: str) -> tuple[str, ...]:
    """The settings a view shows, in the list's order."""
    return tuple(s.name for s in SETTINGS if view in s.views)


def from_config() -> tuple[str, ...]:
    """The settings whose default is the [train] key of the same name."""
    return tuple(s.name for s in SETTINGS if s.config)


def parser(config: Config) -> StageArgumentParser:
    """python -m stages.train_lora's command line, its defaults from ``config``'s [train]."""
    p = StageArgumentParser(prog="train_lora", description="Train a LoRA adapter on chat data, resumably.")
    for s in SETTINGS:
        kw = dict(s.argparse)
        if s.config:
            kw["default"] = getattr(config.train, s.name)
        if s.help:
            kw["help"] = s.help
        if s.flag:
            kw["dest"] = s.name
        p.add_argument(s.option, **kw)
    return p


def form_value(value: Any) -> str:
    """A value as the form shows it: 2e-4, not 0.0002; 1, not 1.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def batch(args) -> dict[str, int | str]:
    """A training's ranks and its global batch (samples per optimizer step): per-rank batch x ranks
    (per node, times nodes) x accumulation, and what each rank holds of the base (``shard``), from its
    parsed arguments."""
    ranks = args.gpus * args.nnodes
    return {
        "ranks": ranks,
        "batch_size": args.batch_size,
        "gradient_accumulation": args.gradient_accumulation,
        "global_batch": args.batch_size * ranks * args.gradient_accumulation,
        "shard": args.shard,
    }
