"""What a checkpoint records of a run, and the checkpoint directory both backends share; torch-free,
so the mlx backend reads and writes checkpoints without loading torch.

``<output>/checkpoints/step-<N>/`` gets its name only when complete (a kill -9 mid-write leaves the
previous one intact), holds the backend's own files and ``state.json`` (step, epoch, position in the
epoch's batch order, counters); the newest KEEP are kept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.fsutil import atomic_path, remove_stale_partials

KEEP = 2  # checkpoints kept on disk; older ones are removed once a newer one is complete


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch the next micro-batch belongs to
    batch: int = 0  # index of the next micro-batch in that epoch's order
    tokens: int = 0  # tokens processed (not padding)
    samples: int = 0
    data_key: str = ""  # fingerprint of the tokenized data, so a resume on other data is refused
    settings: dict = field(default_factory=dict)  # the flags that shape the run, so a resume with others is refused
    losses: list = field(default_factory=list)  # [step, loss] history, for the record


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step-{step:07d}"


def write(output: Path, state: TrainState, fill: Callable[[Path], None]) -> Path:
    """The checkpoint of ``state``: ``fill(directory)`` writes the backend's files, state.json comes
    last, the directory is renamed into place whole, then older ones go."""
    target = checkpoint_dir(output, state.step)
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        fill(tmp)
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1) + "\n")
    remove_stale_partials(output / "checkpoints")  # what a kill -9 mid-checkpoint left, of any step
    for old in sorted((output / "checkpoints").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest(output: Path) -> Path | None:
    """The newest complete checkpoint (complete ones are the only ones with their final name)."""
    found = sorted(p for p in (output / "checkpoints").glob("step-*") if (p / "state.json").exists())
    return found[-1] if found else None


def read_state(path: Path) -> TrainState:
    return TrainState(**json.loads((path / "state.json").read_text()))
