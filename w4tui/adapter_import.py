"""``w4tui adapter import SRC``: bring an adapter trained elsewhere (a rented GPU box) home.

SRC is a folder or ``host:path`` (fetched with ``rsync`` over ``ssh``; only the adapter's three files,
never its checkpoints). The adapter must be PEFT LoRA and fit the configured base: the same
architecture, every tensor it changes present with the shape it implies, and the same base revision
when both sides recorded one. It lands in ``<outputs>/adapters/<name>`` complete or not at all, never
over anything; ``import.json`` beside it records where it came from, and the nightly ledger learns it
as a build, so once ``w4tui adapter build NAME`` has promoted it the next night continues from it.
Standard library only: no torch (safetensors headers are read as JSON).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import time
from pathlib import Path

from core.config import Config
from core.fsutil import atomic_path
from w4tui.nightly.ledger import IMPORT_FILE, Ledger
from w4tui.nightly.record import hparams
from w4tui.runs.pipeline import Step

FILES = ("adapter_config.json", "adapter_model.safetensors")
RECORD = "training_run.json"  # the source's training record, when it has one (w4tui trained it)
LINEAGE = IMPORT_FILE
SSH_ENV = "W4TUI_RSYNC_SSH"  # the remote shell rsync uses (default "ssh"); a stand-in in the tests
REMOTE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:(?!//)")


class ImportError_(Exception):
    """The adapter cannot be imported; the message is one line naming what and why."""


def is_remote(source: str) -> bool:
    # host:path (user@host:path), not a local path that happens to hold a colon
    return bool(REMOTE.match(source)) and not Path(source).exists()


def rsync_command(source: str, destination: Path) -> list[str]:
    """rsync of the adapter's files (not its checkpoints) from ``host:path`` into ``destination``."""
    remote = source.rstrip("/") + "/"
    includes = [f"--include={name}" for name in (*FILES, RECORD)]
    ssh = os.environ.get(SSH_ENV, "ssh")
    return ["rsync", "-rt", "--protect-args", "-e", ssh, *includes, "--exclude=*", remote, f"{destination}/"]


def import_adapter(config: Config, source: str, name: str | None = None) -> Path:
    """Fetch, check, and move the adapter into place; its final path. ImportError_ on any refusal."""
    remote = is_remote(source)
    label = source if remote else str(Path(source).expanduser())
    name = name or _default_name(source)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", name):
        raise ImportError_(f"--name {name}: use letters, digits, '_', '.' and '-' (it becomes the build's tag)")
    target = config.paths.outputs / "adapters" / name
    if target.exists() or target.is_symlink():
        raise ImportError_(f"{target}: already exists; nothing is replaced (choose another --name)")
    with atomic_path(target) as staging:
        staging.mkdir(parents=True)
        if remote:
            _fetch(source, staging)
        else:
            _copy(Path(label), staging)
        check(staging, config, label)
        (staging / LINEAGE).write_text(json.dumps(_lineage(staging, config, label), indent=1) + "\n")
    _register(config, name, target)
    return target


def _default_name(source: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])[:40]
    return f"imported-{time.strftime('%Y%m%d-%H%M%S')}-{stem}".rstrip("-.")


def _fetch(source: str, staging: Path) -> None:
    if shutil.which("rsync") is None:
        raise ImportError_(f"{source}: rsync is not installed here (brew install rsync / apt install rsync)")
    cmd = rsync_command(source, staging)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ImportError_(f"{source}: rsync failed: {why} (command: {shlex.join(cmd)})")


def _copy(folder: Path, staging: Path) -> None:
    if not folder.is_dir():
        raise ImportError_(f"{folder}: no such folder (give the adapter's folder, or host:path)")
    for name in (*FILES, RECORD):
        if (folder / name).is_file():
            shutil.copy2(folder / name, staging / name)


# -- the checks -----------------------------------------------------------------------------------
def check(adapter: Path, config: Config, label: str) -> None:
    """PEFT LoRA, fitting the configured base; else ImportError_ naming the first thing wrong."""
    for name in FILES:
        if not (adapter / name).is_file():
            raise ImportError_(f"{label}: not a PEFT adapter (no {name})")
    try:
        peft = json.loads((adapter / FILES[0]).read_text())
    except (OSError, ValueError) as exc:
        raise ImportError_(f"{label}/{FILES[0]}: not valid JSON ({exc})") from None
    if not isinstance(peft, dict) or str(peft.get("peft_type", "")).upper() != "LORA":
        raise ImportError_(f"{label}/{FILES[0]}: peft_type is {peft.get('peft_type')!r}, not LORA")
    tensors = header_shapes(adapter / FILES[1], label)
    base = config.model.dir
    if not (base / "config.json").is_file():
        raise ImportError_(f"{base}: the configured base model is not downloaded (w4tui run download)")
    base_config = json.loads((base / "config.json").read_text())
    record = _read_json(adapter / RECORD)
    arch = record.get("architecture")  # records before issue 19 carry none: the shapes decide
    if arch and arch != (base_config.get("architectures") or [None])[0]:
        raise ImportError_(
            f"{label}: trained on a {arch}, the configured base {base} is {base_config['architectures'][0]}"
        )
    base_shapes = {}
    for shard in _shards(base):
        base_shapes.update(header_shapes(shard, str(shard)))
    for key, shape in tensors.items():
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if not part:
            continue
        weight = f"{module}.weight"
        if weight not in base_shapes:
            raise ImportError_(f"{label}: changes {weight}, which the base {base} does not have (another base model?)")
        out, inp = base_shapes[weight]
        if (part.startswith("A") and shape[1] != inp) or (part.startswith("B") and shape[0] != out):
            raise ImportError_(
                f"{label}: does not fit the base: {weight} is {out}x{inp} in {base} but the adapter's "
                f"lora_{part.split('.')[0]} is {shape[0]}x{shape[1]} (trained on another base model?)"
            )
    theirs, ours = record.get("base_commit"), _read_json(base / ".w4tui-download.json").get("commit")
    if theirs and ours and theirs != ours:
        raise ImportError_(f"{label}: trained on base revision {theirs}, the configured base {base} is {ours}")


def header_shapes(path: Path, label: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (the file's first bytes: 8-byte length + JSON)."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError("header length beyond reason")
            header = json.loads(fh.read(length))
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError) as exc:
        raise ImportError_(f"{label}: not a safetensors file ({exc})") from None


def _shards(base: Path) -> list[Path]:
    index = base / "model.safetensors.index.json"
    if index.is_file():
        return [base / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(base.glob("*.safetensors"))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


# -- lineage ---------------------------------------------------------------------------------------
def _lineage(adapter: Path, config: Config, label: str) -> dict:
    record = _read_json(adapter / RECORD)
    return {
        "source": label,
        "imported_at": time.time(),
        "base_model": str(config.model.dir.resolve()),
        "trained_on": record.get("base_model"),
        "ranks": record.get("ranks"),
        "global_batch": record.get("global_batch"),
        "final_loss": record.get("final_loss"),
        "eval_loss": record.get("eval_loss"),
        "has_training_record": bool(record),
    }


def _register(config: Config, name: str, adapter: Path) -> None:
    """The ledger learns the build, so a promotion of it (verify --promote, or by hand) is what the
    next night continues from (nightly/plan.py: parent_adapter)."""
    record = _read_json(adapter / RECORD)
    args = record.get("args") or {}
    ledger = Ledger.open(config)
    try:
        ledger.upsert_build(
            name,
            adapter=str(adapter),
            base_model=str(config.model.dir.resolve()),
            data=dict(record.get("data") or {}),
            hparams=hparams(args),
        )
    finally:
        ledger.close()


def chain(config: Config, name: str) -> list:
    """The steps that build, verify and promote an imported adapter: the night's steps without training."""
    out, model = config.paths.outputs, str(config.model.dir)
    adapter = str(out / "adapters" / name)
    f16 = str(out / "gguf" / f"{name}-f16.gguf")
    quant = str(out / "gguf" / f"{name}-{config.quantize.type}.gguf")
    return [
        Step("convert", args=["--model", model, "--adapter", adapter, "--output", f16]),
        Step("quantize", args=["--input", f16, "--output", quant, "--type", config.quantize.type]),
        Step("deploy", args=["--gguf", quant, "--tag", name]),
        Step("verify", args=["--model", f"{config.ollama.model}:{name}", "--promote"]),
    ]
