"""Each stage's command line, as an argparse parser: the stage parses its ``argv`` with it, and the TUI,
the CLI and the night parse a stage call with the same one before it starts (``core.specs``), so a flag
is read in one place. Standard library only. The train stage's parser is made from its settings list
(``core.trainsettings``).

Defaults that come from the config are read from the ``Config`` given, the one the stage will load
(the runner hands it ``W4TUI_CONFIG``); a builder that needs none takes ``None``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import EVAL_TYPES, QUANT_TYPES, Config
from core.errors import UsageError
from core.ollama.client import SERVER_QUANTIZE
from core.ollama.names import name_problem

# convert's --outtype. Lower case: llama.cpp's converter types (q8_0 from the source precision); upper
# case: llama-quantize's file types, quantized from the F16 file's values in the same pass (stages/quant/
# mix.py FTYPES; tests/unit/test_invocation.py holds the two lists together).
OUTTYPES = ("f16", "bf16", "f32", "q8_0", *EVAL_TYPES)
MERGE_DTYPES = ("bf16", "f16", "f32")  # merge --dtype besides auto (stages/merge_lora.py OUT_DTYPES)


class StageArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UsageError (one line, exit 2) instead of exiting, and takes
    each long flag in both spellings: ``--base_model`` (the one the help shows) or ``--base-model``."""

    def __init__(self, *args, **kwargs) -> None:
        self._flags: set[str] = set()  # before argparse adds --help through add_argument
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs) -> argparse.Action:
        # Declared either way, shown snake_case: one style per program, the one the seed's users type.
        action = super().add_argument(*dict.fromkeys(map(snake_flag, names)), **kwargs)
        self._flags.update(action.option_strings)
        return action

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._snake_args(args), namespace)

    def _snake_args(self, args: list[str]) -> list[str]:
        out = []
        for i, arg in enumerate(args):
            if arg == "--":  # what follows is not flags
                return out + args[i:]
            flag, eq, value = arg.partition("=")
            snake = snake_flag(flag)
            # --base-model, or an abbreviation of it (--base-m); an unknown flag stays as typed for its error
            if flag not in self._flags and any(known.startswith(snake) for known in self._flags):
                arg = snake + eq + value
            out.append(arg)
        return out

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", hint=f"see: python -m stages.{self.prog} --help")

    def given(self, args: list[str]) -> dict[str, object]:
        """Only what ``args`` sets, by destination: no defaults, nothing required (the flags a person
        typed after ``--``, read before the config's defaults are put around them). {} when they do
        not parse: the full parse names the mistake."""
        if {"-h", "--help"} & set(args):
            return {}  # argparse would print the help and exit
        saved = [(a, a.required, a.default) for a in self._actions]
        for action in self._actions:
            action.required, action.default = False, argparse.SUPPRESS
        try:
            return vars(self.parse_known_args(args)[0])
        except UsageError:
            return {}
        finally:
            for action, required, default in saved:
                action.required, action.default = required, default


def snake_flag(name: str) -> str:
    """--skip-bad -> --skip_bad; short flags and positionals as they are."""
    return "--" + name[2:].replace("-", "_") if name.startswith("--") else name


class BoolFlag(argparse.Action):
    """--gradient_checkpointing / --no_gradient_checkpointing style switch (--no-... works too)."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings + [s.replace("--", "--no_", 1) for s in option_strings], dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))


def download(config: Config | None = None) -> StageArgumentParser:
    p = StageArgumentParser(
        prog="download",
        description="Download the base model: safetensors, config, tokenizer and generation files only.",
    )
    p.add_argument("--repo", required=True, help="Hugging Face repo id, or a local model directory")
    p.add_argument("--revision", default="main", help="branch, tag or commit (Hub only)")
    p.add_argument("--output", required=True, type=Path, help="directory to place the model in")
    return p


def merge(config: Config | None = None) -> StageArgumentParser:
    p = StageArgumentParser(
        prog="merge_lora",
        description="Merge a LoRA adapter into its base model, streaming tensor by tensor from the base's shards.",
    )
    p.add_argument("--adapter", required=True, type=Path, help="PEFT LoRA adapter directory")
    p.add_argument("--base_model", required=True, type=Path, help="Hugging Face model directory")
    p.add_argument("--output", required=True, type=Path, help="directory for the merged model")
    p.add_argument(
        "--dtype",
        choices=["auto", *MERGE_DTYPES],
        default="auto",
        help="dtype of the merged weights (auto: each tensor keeps the base's dtype)",
    )
    return p


def convert(config: Config | None = None) -> StageArgumentParser:
    p = StageArgumentParser(
        prog="convert_gguf",
        description="Convert a Hugging Face Qwen2 model to GGUF, optionally merging a LoRA adapter in the same pass.",
    )
    p.add_argument(
        "--model",
        "--base_model",
        dest="model",
        required=True,
        type=Path,
        help="Hugging Face model directory (a merged model, or the base with --adapter)",
    )
    p.add_argument("--output", required=True, type=Path, help="the .gguf file to write")
    p.add_argument(
        "--outtype",
        choices=OUTTYPES,
        default="f16",
        help="tensor type of the weights (default f16); Q4_K_M etc.: quantize in the same pass, as llama-quantize would",
    )
    p.add_argument("--adapter", type=Path, help="merge this PEFT LoRA adapter on the fly (no merged copy on disk)")
    p.add_argument("--name", help="general.name in the GGUF (default: the adapter's or the model's folder name)")
    p.add_argument(
        "--converter",
        choices=["builtin", "llama.cpp"],
        default="builtin",
        help="llama.cpp: run the convert_hf_to_gguf.py named in [tools] convert_hf_to_gguf",
    )
    return p


def quantize(config: Config) -> StageArgumentParser:
    q = config.quantize
    p = StageArgumentParser(
        prog="quantize",
        description="Quantize an F16/BF16 GGUF with llama.cpp (Q4_K_M by default; Q4_K_S, Q5_K_M, Q6_K, Q8_0).",
    )
    p.add_argument("--input", required=True, type=Path, help="F16, BF16 or F32 GGUF")
    p.add_argument("--output", required=True, type=Path, help="the quantized .gguf to write")
    p.add_argument("--type", choices=QUANT_TYPES, default=q.type, help=f"default: [quantize] type ({q.type})")
    p.add_argument(
        "--imatrix",
        type=Path,
        default=Path(q.imatrix) if q.imatrix else None,
        help="importance matrix, passed to llama-quantize (default: [quantize] imatrix)",
    )
    p.add_argument("--threads", type=int, default=q.threads, help="0: all cores (default: [quantize] threads)")
    p.add_argument(
        "--backend",
        choices=["auto", "llama-quantize", "llama_cpp", "ollama"],
        default="auto",
        help="ollama: skip quantizing here and let Ollama do it at deploy",
    )
    return p


def quantize_choice(text: str) -> str:
    """deploy --quantize: auto, none, or what Ollama quantizes to, in any case (Q4_K_M or q4_k_m)."""
    choices = {"auto": "auto", "none": "none", **{k.lower(): v for k, v in SERVER_QUANTIZE.items()}}
    if text.lower() not in choices:
        raise ValueError(text)
    return choices[text.lower()]


def deploy(config: Config | None = None) -> StageArgumentParser:
    p = StageArgumentParser(
        prog="deploy_ollama",
        description="Deploy a GGUF to Ollama as an immutable build tag, with the base model's chat template.",
    )
    p.add_argument("--gguf", required=True, type=Path, help="the GGUF to serve")
    p.add_argument("--tag", required=True, help="build tag, e.g. build-20261126-2130 (not latest/previous)")
    p.add_argument(
        "--quantize",
        type=quantize_choice,
        default="auto",
        metavar="{auto,none,q4_K_M,q4_K_S,q8_0}",
        help="let Ollama quantize an F16/BF16 GGUF; auto: [quantize] type when ollama_fallback is on",
    )
    p.add_argument("--modelfile", type=Path, help="where to write the Modelfile (default: next to the GGUF)")
    return p


def model_name(text: str) -> str:
    """A model name as the server checks it (types/model/name.go), or argparse's one-line error."""
    if problem := name_problem(text):
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def verify(config: Config) -> StageArgumentParser:
    v = config.verify
    p = StageArgumentParser(
        prog="verify",
        description="Verify a deployed build with the configured prompts; with --promote, make it ``latest`` if it passes.",
    )
    p.add_argument(
        "--model", required=True, type=model_name, help="the build to verify, e.g. web4-agent:build-20261126-2130"
    )
    p.add_argument("--prompt", action="append", dest="prompts", help="a prompt (repeatable; default: [verify] prompts)")
    p.add_argument("--expect", action="append", default=[], help="a substring every answer must contain (repeatable)")
    p.add_argument(
        "--num_predict",
        "--num-predict",
        type=int,
        default=v.num_predict,
        help=f"token limit per answer (default: [verify] num_predict, {v.num_predict})",
    )
    p.add_argument("--promote", action="store_true", help="make the build latest if it passes")
    p.add_argument(
        "--no-answer-check",
        "--no_answer_check",
        action="store_true",
        help="skip the not-an-answer check (random tokens, word salad, repeated fragments)",
    )
    p.add_argument(
        "--report",
        type=Path,
        help="write the answers and figures here as JSON (default: verify.json beside the run's events)",
    )
    return p


def evaluate(config: Config) -> StageArgumentParser:
    e = config.eval
    p = StageArgumentParser(
        prog="evaluate",
        description="Measure what conversion and each quantization cost: perplexity, KL divergence against F16, top-1",
    )
    p.add_argument("--gguf", required=True, type=Path, help="the build: its F16 GGUF, or a quantized GGUF beside it")
    p.add_argument("--types", nargs="+", choices=EVAL_TYPES, default=e.types, help="default: [eval] types")
    p.add_argument(
        "--data",
        type=Path,
        default=config.base_dir / e.data if e.data else None,
        help="held-out JSONL (default: [eval] data, else the training run's eval split)",
    )
    p.add_argument("--adapter", type=Path, help="default: the adapter the GGUF names (w4tui.adapter)")
    p.add_argument("--base_model", type=Path, help="default: the base model the GGUF names (w4tui.base_model)")
    p.add_argument("--max_tokens", type=int, default=e.max_tokens, help="scored tokens at most ([eval] max_tokens)")
    p.add_argument(
        "--no-transformers",
        dest="transformers",
        action="store_false",
        default=e.transformers,
        help="skip the transformers base+adapter row",
    )
    p.add_argument("--threads", type=int, default=e.threads, help="llama.cpp threads (0: its default)")
    p.add_argument(
        "--device", choices=["auto", "mps", "cuda", "cpu"], default=config.train.device, help="for the transformers row"
    )
    p.add_argument("--output", type=Path, help="the table as JSON (default: BUILD-eval.json beside the F16 GGUF)")
    return p
