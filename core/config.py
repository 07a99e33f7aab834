"""Typed configuration: the embedded default ``config.toml`` overlaid by the user's file.

Every mistake is a ``ConfigError`` whose text is one line naming the file, the key and the problem.
Standard library only (plus nothing): stages import this too.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import EXIT_USAGE, ActionableError
from core.ollama import names as ollama_names

ENV_CONFIG = "W4TUI_CONFIG"

QUANT_TYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0")
# What the eval stage can quantize to (llama.cpp's K-quants and Q8_0), best first.
EVAL_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SHARDS = ("ddp", "fsdp")  # [train] shard: the whole base on every rank, or 1/N of it (FSDP2)


class ConfigError(ActionableError):
    """A user mistake in a config file; ``str()`` is the one-line message to show (exit 2)."""

    exit_code = EXIT_USAGE


def _check(pred: Callable[[Any], bool], what: str) -> dict[str, Any]:
    return {"check": (pred, what)}


def _positive() -> dict[str, Any]:
    return _check(lambda v: v > 0, "must be greater than 0")


def _up_to(limit: float) -> dict[str, Any]:
    """Greater than 0 and at most ``limit``: values beyond any reason are typos (1e9 epochs)."""
    return _check(lambda v: 0 < v <= limit, f"must be greater than 0 and at most {limit:g}")


def _directory() -> dict[str, Any]:
    return _check(lambda v: not v.exists() or v.is_dir(), "must be a directory, but it is a file")


def _fraction() -> dict[str, Any]:
    return _check(lambda v: 0 <= v < 1, "must be at least 0 and less than 1")


def _range() -> dict[str, Any]:
    def ok(v: str) -> bool:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*", v)
        return m is not None and float(m.group(1)) <= float(m.group(2))

    return _check(ok, 'must be a range "low-high" like "8-12"')


def _one_of(*options: str) -> dict[str, Any]:
    return _check(lambda v: v in options, "must be one of " + ", ".join(f'"{o}"' for o in options))


def _days_ok(value: str) -> bool:
    parts = [p.strip() for chunk in value.split(",") for p in chunk.split("-")]
    return bool(value.strip()) and all(p in DAYS for p in parts)


@dataclass(frozen=True)
class ModelConfig:
    base: str = field(metadata=_check(lambda v: bool(v.strip()), "must not be empty"))
    revision: str
    dir: Path


@dataclass(frozen=True)
class PathsConfig:
    data: Path
    incoming: Path = field(metadata=_directory())
    outputs: Path = field(metadata=_directory())
    runs: Path = field(metadata=_directory())
    state: Path = field(metadata=_directory())


@dataclass(frozen=True)
class TrainConfig:
    lora_r: int = field(metadata=_up_to(1024))
    lora_alpha: float = field(metadata=_up_to(100_000))
    lora_dropout: float = field(metadata=_fraction())
    target_modules: list[str] = field(metadata=_check(bool, "must list at least one module"))
    learning_rate: float = field(metadata=_up_to(1))
    epochs: float = field(metadata=_up_to(1000))
    max_seq_length: int = field(
        metadata=_check(lambda v: 16 <= v <= 1 << 20, "must be at least 16 and at most 1048576")
    )
    overlong: str = field(metadata=_one_of("truncate", "drop"))
    batch_size: int = field(metadata=_up_to(4096))
    gradient_accumulation: int = field(metadata=_up_to(65536))
    gradient_checkpointing: bool
    batching: str = field(metadata=_one_of("pack", "group", "pad"))
    cache: bool
    checkpoint_every: int = field(metadata=_positive())
    log_every: int = field(metadata=_positive())
    eval_fraction: float = field(metadata=_fraction())
    seed: int = field(metadata=_check(lambda v: 0 <= v < 2**32, "must be from 0 to 4294967295"))  # numpy's range
    device: str = field(metadata=_one_of("auto", "mps", "cuda", "cpu"))
    gpus: int = field(metadata=_up_to(1024))  # ranks under torchrun, one per GPU (stages/train/launch.py)
    shard: str = field(metadata=_one_of(*SHARDS))  # what each rank holds (stages/train/distributed.py)
    backend: str = field(metadata=_one_of("auto", "torch", "mlx"))  # see stages/train/backend.py
    quantize_base: int = field(metadata=_check(lambda v: v in (0, 4, 8), "must be 4, 8 or 0 (no quantization)"))


@dataclass(frozen=True)
class NightlyConfig:
    dataset_glob: str = field(metadata=_check(lambda v: v.endswith(".jsonl"), 'must end in ".jsonl"'))
    epochs: float = field(metadata=_up_to(1000))
    learning_rate: float = field(metadata=_up_to(1))
    replay: float = field(metadata=_fraction())
    keep: int = field(metadata=_check(lambda v: v >= 1, "must be at least 1"))
    keep_f16: bool


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool
    time: str = field(
        metadata=_check(
            lambda v: re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) is not None, 'must be a 24-hour time like "21:30"'
        )
    )
    days: str = field(metadata=_check(_days_ok, 'must be days like "mon-sun" or "mon,wed,fri"'))
    misfire_grace_hours: float = field(metadata=_check(lambda v: 0 < v <= 168, "must be more than 0 and at most 168"))


@dataclass(frozen=True)
class QuantizeConfig:
    type: str = field(metadata=_one_of(*QUANT_TYPES))
    imatrix: str
    ollama_fallback: bool
    threads: int = field(metadata=_check(lambda v: v >= 0, "must be 0 (all cores) or more"))


@dataclass(frozen=True)
class OllamaParameters:
    temperature: float = field(metadata=_check(lambda v: v >= 0, "must be 0 or more"))
    top_p: float = field(metadata=_check(lambda v: 0 < v <= 1, "must be greater than 0 and at most 1"))
    top_k: int = field(metadata=_positive())
    repeat_penalty: float = field(metadata=_positive())
    num_ctx: int = field(metadata=_check(lambda v: v >= 256, "must be at least 256"))


@dataclass(frozen=True)
class OllamaConfig:
    # As OLLAMA_HOST: "http://127.0.0.1:11434", "127.0.0.1:11434" or "0.0.0.0" (envconfig/config.go).
    host: str = field(
        metadata=_check(
            lambda v: re.fullmatch(r"(https?://)?[^/\s]+(/\S*)?", v) is not None,
            'must be a host like "http://127.0.0.1:11434" or "127.0.0.1:11434"',
        )
    )
    # Names are checked as the server checks them (core/ollama/names.py follows types/model/name.go).
    model: str = field(
        metadata=_check(
            lambda v: ":" not in v.rsplit("/", 1)[-1] and ollama_names.name_problem(v) is None,
            "must be an Ollama model name without a tag ([namespace/]name; parts of 1-80 letters, digits, "
            "'_', '-', '.', starting with a letter, digit or '_'; no '.' in the namespace)",
        )
    )
    template_from: str = field(
        metadata=_check(
            lambda v: ollama_names.name_problem(v) is None,
            'must be an Ollama model name like "qwen2.5-coder:7b-instruct-q4_K_M"',
        )
    )
    system: str
    parameters: OllamaParameters


@dataclass(frozen=True)
class VerifyConfig:
    prompts: list[str] = field(metadata=_check(bool, "must list at least one prompt"))
    num_predict: int = field(metadata=_positive())
    keep_alive: str = field(
        metadata=_check(
            lambda v: re.fullmatch(r"-?\d+|(\d+(\.\d+)?(ms|s|m|h))+", v) is not None,
            'must be a duration like "5m", "30s", "1h" or "0"',
        )
    )
    expect: dict[str, list[str]]
    regression: list[str]  # prompt files of the forgetting guard ("default": the shipped set)
    max_regression: float = field(metadata=_check(lambda v: 0 <= v <= 1, "must be between 0 and 1"))
    regression_num_predict: int = field(metadata=_positive())
    expect_tokens_per_s: str = field(metadata=_range())  # "low-high": out of range is a warning
    expect_ttft_ms: str = field(metadata=_range())
    expect_memory_gb: str = field(metadata=_range())


@dataclass(frozen=True)
class EvalConfig:
    data: str  # held-out JSONL (relative to the config file); empty: the training run's eval split
    types: list[str] = field(
        metadata=_check(lambda v: all(t in EVAL_TYPES for t in v), "must list types from " + ", ".join(EVAL_TYPES))
    )
    max_tokens: int = field(metadata=_positive())
    transformers: bool
    threads: int = field(metadata=_check(lambda v: v >= 0, "must be 0 (llama.cpp's default) or more"))


@dataclass(frozen=True)
class ToolsConfig:
    llama_quantize: str
    convert_hf_to_gguf: str


@dataclass(frozen=True)
class NotifyConfig:
    url: str = field(
        metadata=_check(
            lambda v: v == "" or re.match(r"https?://[^/\s]+", v) is not None,
            'must be empty or a URL like "https://ntfy.sh/my-topic"',
        )
    )
    desktop: bool


@dataclass(frozen=True)
class Config:
    file: Path  # the file the user's values came from (the default file when none was given)
    model: ModelConfig
    paths: PathsConfig
    train: TrainConfig
    nightly: NightlyConfig
    schedule: ScheduleConfig
    quantize: QuantizeConfig
    ollama: OllamaConfig
    verify: VerifyConfig
    eval: EvalConfig
    tools: ToolsConfig
    notify: NotifyConfig

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    @property
    def cli(self) -> str:
        """The ``w4tui`` command line that selects this same config, for hints a person copies."""
        if self.file == default_config_path():
            return "w4tui"

        return f"w4tui --config {shlex.quote(str(self.file))}"

    def stage_env(self) -> dict[str, str]:
        """Environment for a stage process, so its defaults come from this same file."""
        return {ENV_CONFIG: str(self.file)}


def default_config_path() -> Path:
    """The embedded default: inside the package when installed from a wheel, else the repo's root."""
    here = Path(__file__).resolve().parent
    packaged = here / "config.toml"
    return packaged if packaged.is_file() else here.parent / "config.toml"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config`` wins, then ``W4TUI_CONFIG``, then the embedded default."""
    chosen = explicit or os.environ.get(ENV_CONFIG)
    return Path(chosen).expanduser().resolve() if chosen else default_config_path()


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = config_path(explicit)
    defaults = _read_toml(default_config_path())
    user = _read_toml(path) if path != default_config_path() else {}
    merged = _overlay(defaults, user)
    config = _build(Config, merged, path, "", base=path.parent)
    unknown = [key for key in config.verify.expect if key not in config.verify.prompts]
    if unknown:  # a typo in the key would otherwise silently check nothing
        raise ConfigError(
            f"{path}: [verify.expect] names a prompt that is not in [verify] prompts: {unknown[0]!r} "
            "(the keys must be the prompts, word for word)"
        )
    return config


def field_problem(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of a config section (None: nothing), so a stage's
    command-line flags are held to the same ranges as the config's keys."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    check = next((f.metadata.get("check") for f in fields(cls) if f.name == name), None)
    return check[1] if check and not check[0](value) else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (create it, or drop --config / W4TUI_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except IsADirectoryError:
        inside = path / "config.toml"  # `--config DIR` for the demo's directory: name the file in it
        hint = f" (did you mean --config {inside}?)" if inside.is_file() else ""
        raise ConfigError(f"{path}: cannot read config file: it is a directory{hint}") from None
    except (PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.__class__.__name__}") from None


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _overlay(base[key], value)
        else:
            out[key] = value
    return out


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path string"}


def _build(cls: type, data: dict[str, Any], file: Path, prefix: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)} - {"file"}
    for key in data:
        if key not in known:
            where = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(
                f"{file}: unknown key '{_join(prefix, key)}' in {where} (known: {', '.join(sorted(known))})"
            )
    values: dict[str, Any] = {"file": file} if cls is Config else {}
    for f in fields(cls):
        if f.name == "file":
            continue
        key = _join(prefix, f.name)
        hint = hints[f.name]
        value = data[f.name]  # always present: the embedded default has every key
        if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: '{key}' must be a table ([{key}])")
            values[f.name] = _build(hint, value, file, key, base)
            continue
        value = _coerce(value, hint, file, key, base)
        check = f.metadata.get("check")
        if check and not check[0](value):
            raise ConfigError(f"{file}: '{key}' {check[1]} (got {value!r})")
        values[f.name] = value
    return cls(**values)


def _coerce(value: Any, hint: Any, file: Path, key: str, base: Path) -> Any:
    if typing.get_origin(hint) is dict:  # a table of string lists: [verify.expect]
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{key}' must be a table ([{key}])")
        return {k: _coerce(v, list[str], file, f"{key}.{k}", base) for k, v in value.items()}
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{file}: '{key}' must be a list of strings (got {value!r})")
        return list(value)
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = (float(value), True) if abs(value) < 2**1023 else (float("inf"), True)
    if hint is float and ok and not math.isfinite(value):  # TOML allows inf and nan; no setting does
        raise ConfigError(f"{file}: '{key}' must be a finite number (got {value!r})")
    if hint is Path and isinstance(value, str) and value.strip():
        return (base / Path(value).expanduser()).resolve()
    if not ok:
        raise ConfigError(f"{file}: '{key}' must be {_TYPE_NAMES[hint]} (got {value!r})")
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
