"""The ETA's arithmetic and wording, and which earlier runs count as the same settings."""

import json
import time

from core import eta

ARGS = {
    "base_model": "/m",
    "max_seq_length": 2048,
    "batch_size": 1,
    "gradient_accumulation": 16,
    "gradient_checkpointing": True,
    "batching": "pack",
    "lora_r": 16,
    "target_modules": ["q_proj"],
}


def record(directory, ended: float, rate: float, device: str = "mps", **changes) -> None:
    directory.mkdir(parents=True)
    body = {
        "args": {**ARGS, **changes},
        "device": device,
        "base_dtype": "bfloat16",
        "tokens_per_second": rate,
        "ended": ended,
    }
    (directory / "training_run.json").write_text(json.dumps(body))


def test_the_wording_a_person_reads_before_starting():
    now = time.mktime((2026, 12, 1, 21, 30, 0, 0, 0, -1))
    shown = eta.estimate(4_200_000, 100.0, "measured by night-1", now)
    assert shown["eta_s"] == 42000.0 and shown["text"] == (
        "about 11 h 40 min, done ~09:10 (4,200,000 tokens at 100 tokens/s, measured by night-1)"
    )


def test_the_newest_run_with_the_same_settings_on_the_same_device_counts(tmp_path):
    key = eta.cost_key(ARGS, "mps", "bfloat16")
    record(tmp_path / "old", ended=100, rate=50.0)
    record(tmp_path / "new", ended=200, rate=60.0)
    record(tmp_path / "newest-cpu", ended=300, rate=5.0, device="cpu")
    record(tmp_path / "newest-longer", ended=400, rate=20.0, max_seq_length=4096)
    record(tmp_path / "newest-8-gpus", ended=500, rate=900.0, gpus=8)  # a GPU box's group: not this run's rate
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "training_run.json").write_text("{not json")
    assert eta.previous_rate(tmp_path, key) == (60.0, str(tmp_path / "new"))
    record(tmp_path / "8-gpus-ddp", ended=600, rate=900.0, gpus=8)
    record(tmp_path / "8-gpus-fsdp", ended=700, rate=700.0, gpus=8, shard="fsdp")  # the base gathered every step
    eight = eta.cost_key({**ARGS, "gpus": 8}, "mps", "bfloat16")
    assert eta.previous_rate(tmp_path, eight) == (900.0, str(tmp_path / "8-gpus-ddp"))
    assert eta.previous_rate(tmp_path, {**eight, "shard": "fsdp"}) == (700.0, str(tmp_path / "8-gpus-fsdp"))
    assert eta.previous_rate(tmp_path, key, exclude=tmp_path / "new") == (50.0, str(tmp_path / "old"))
    assert eta.previous_rate(tmp_path / "nowhere", key) is None


def test_how_far_it_was_off():
    predicted = eta.estimate(1000, 10.0, "calibrated on 4 steps", 0)
    assert eta.outcome(predicted, 110.0) == {
        "eta_s": 100.0,
        "tokens": 1000,
        "rate": 10.0,
        "source": "calibrated on 4 steps",
        "actual_s": 110.0,
        "error": 0.1,
    }
    assert eta.outcome(None, 5.0) is None
