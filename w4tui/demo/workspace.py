"""`w4tui demo`: a complete, offline playground — tiny Qwen2 model, Web4 data and a config — in seconds."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from core.fsutil import atomic_write_text
from w4tui.demo.samples import write_demo_data
from w4tui.demo.tinymodel import build_model

DEMO_CONFIG = """\
# w4tui demo: a tiny random Qwen2 model and a small Web4 dataset, so the whole pipeline runs in a minute
# on any machine. Every key not named here keeps its value from the embedded default config.toml.

[model]
base = "models/tiny-qwen2"   # a local directory: nothing to download
dir = "models/tiny-qwen2"

[paths]
data = "data/train"
incoming = "data/incoming"

[train]
max_seq_length = 256
batch_size = 4
gradient_accumulation = 1
gradient_checkpointing = false
epochs = 1
learning_rate = 5e-3
checkpoint_every = 10
log_every = 1
eval_fraction = 0.05

[verify]
num_predict = 64
"""


def default_demo_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "w4tui" / "demo"


def init_demo(directory: str | os.PathLike[str], samples: int = 240, day: date | None = None) -> Path:
    """Create the demo in ``directory`` and return its config path. Refuses to overwrite a config.
    ``day`` dates the incremental file (default today); tests pass one so no result depends on the date."""
    directory = Path(directory).resolve()
    config = directory / "config.toml"
    if config.exists():
        raise FileExistsError(f"{config} already exists; use it (w4tui --config {config}) or pick another directory")
    model = directory / "models" / "tiny-qwen2"
    if not (model / "config.json").exists():
        build_model(model, "tiny", seed=0)
    write_demo_data(directory / "data" / "train", directory / "data" / "incoming", count=samples, day=day)
    atomic_write_text(config, DEMO_CONFIG)
    return config
