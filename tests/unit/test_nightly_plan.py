"""Tonight's plan: the newest dated file, a bad line named before any training, data already trained
into the promoted lineage skipped, the steps (convert --adapter from the base, no merge), and what
`w4tui nightly --dry-run` prints."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from core.config import load_config
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.plan import BadData, disk_needed, make_plan, newest_data

GOOD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "PDCA"}]}\n'


@pytest.fixture
def config(tmp_path):
    (tmp_path / "config.toml").write_text("[nightly]\nreplay = 0.2\n")
    config = load_config(tmp_path / "config.toml")
    config.paths.incoming.mkdir(parents=True)
    return config


def test_the_newest_date_in_the_name_wins_over_mtime(config):
    for day in ("2026-11-30", "2026-12-01", "2026-11-29"):
        (config.paths.incoming / f"incremental_{day}.jsonl").write_text(GOOD)
    os.utime(config.paths.incoming / "incremental_2026-11-29.jsonl")  # touched last
    assert newest_data(config).name == "incremental_2026-12-01.jsonl"


def test_a_bad_line_stops_the_plan_with_file_and_line(config):
    path = config.paths.incoming / "incremental_2026-12-01.jsonl"
    path.write_text(GOOD + "{not json\n")
    with pytest.raises(BadData, match=rf"^{path}:2: not valid JSON"):
        make_plan(config, Ledger.open(config))


def test_steps_train_from_the_promoted_adapter_and_convert_from_the_base(config):
    (config.paths.incoming / "incremental_2026-12-01.jsonl").write_text(GOOD * 3)
    ledger = Ledger.open(config)
    ledger.upsert_build(
        "nightly-a", adapter="/x/adapters/nightly-a", data={"/old.jsonl": "0" * 64}, promoted=1, promoted_at=1.0
    )
    plan = make_plan(config, ledger, build="nightly-b")
    steps = dict(plan.steps)
    assert plan.samples == 3 and plan.parent_adapter == "/x/adapters/nightly-a"
    assert list(steps) == ["train", "convert", "deploy", "verify"]  # one pass to Q4_K_M: no F16, no quantize
    quant = str(config.paths.outputs / "gguf" / "nightly-b-Q4_K_M.gguf")
    assert steps["convert"][4:] == ["--output", quant, "--outtype", "Q4_K_M"] and steps["deploy"][:2] == [
        "--gguf",
        quant,
    ]
    train = steps["train"]
    assert train[train.index("--resume_from") + 1] == "/x/adapters/nightly-a"
    assert train[train.index("--epochs") + 1] == "1.0" and train[train.index("--learning_rate") + 1] == "0.0001"
    assert train[train.index("--replay") + 1] == "0.2"
    assert steps["convert"][:4] == [
        "--model",
        str(config.model.dir),
        "--adapter",
        str(config.paths.outputs / "adapters" / "nightly-b"),
    ]
    assert steps["verify"] == ["--model", "web4-agent:nightly-b", "--promote"]


def test_keep_f16_writes_the_f16_and_quantizes_it(tmp_path):
    (tmp_path / "config.toml").write_text("[nightly]\nkeep_f16 = true\n")
    config = load_config(tmp_path / "config.toml")
    config.paths.incoming.mkdir(parents=True)
    (config.paths.incoming / "incremental_2026-12-01.jsonl").write_text(GOOD)
    config.model.dir.mkdir(parents=True)
    (config.model.dir / "model.safetensors").write_bytes(b"\0" * 1600)  # only its size counts
    plan = make_plan(config, Ledger.open(config), build="b")
    steps = dict(plan.steps)
    assert list(steps) == ["train", "convert", "quantize", "deploy", "verify"]
    f16 = str(config.paths.outputs / "gguf" / "b-f16.gguf")
    assert steps["convert"][-2:] == ["--output", f16] and steps["quantize"][:2] == ["--input", f16]
    one_pass = dataclasses.replace(config, nightly=dataclasses.replace(config.nightly, keep_f16=False))
    assert plan.disk_needed - disk_needed(one_pass, None) == 1600  # the F16 counted only where it is written


def test_data_already_in_the_promoted_lineage_is_skipped(config):
    from core.datafile import file_sha256 as sha256

    path = config.paths.incoming / "incremental_2026-12-01.jsonl"
    path.write_text(GOOD)
    ledger = Ledger.open(config)
    ledger.upsert_build("nightly-a", adapter="/a", data={str(path): sha256(path)}, promoted=0)
    ledger.upsert_build("nightly-b", adapter="/b", parent_adapter="/a", data={}, promoted=1, promoted_at=2.0)
    plan = make_plan(config, ledger)
    assert plan.skip == f"no new data: {path.name} was already trained into nightly-a" and not plan.steps


def test_dry_run_prints_tonight_and_changes_nothing(config):
    (config.paths.incoming / "incremental_2026-12-01.jsonl").write_text(GOOD * 2)
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", "--config", str(config.file), "nightly", "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "incremental_2026-12-01.jsonl (2 samples" in out
    assert "parent:  none: the first night starts from the base model" in out
    assert (
        "  2. convert  --model" in out
        and "--adapter" in out
        and "merge" not in out.split("steps:")[1].split("disk:")[0]
    )
    assert "disk:    needs" in out
    assert not config.paths.runs.exists()
    # Ollama is down (the tests' OLLAMA_HOST is a closed port): said before a night trains for hours.
    assert (
        out.splitlines()[-1]
        == "warning: Ollama is not reachable at http://127.0.0.1:9 now; the night's deploy step needs it"
    )


def test_no_ollama_warning_when_the_server_answers(config, monkeypatch):
    from ollama_standin import OllamaStandIn

    from w4tui.nightly.plan import ollama_problem

    assert ollama_problem(config).startswith("Ollama is not reachable at http://127.0.0.1:9 now")
    with OllamaStandIn(version="0.33.0") as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.url)
        assert ollama_problem(config) is None


def test_a_night_stopped_by_a_bad_line_records_which_file(config):
    from core.events import EventWriter
    from w4tui.nightly.night import run_night

    path = config.paths.incoming / "incremental_2026-12-02.jsonl"
    path.write_text(GOOD + "{not json\n")
    night = run_night(config, "now-test", EventWriter("nightly"))
    assert (night["outcome"], night["failed_step"]) == ("failed", "data")
    assert night["data_file"] == str(path) and night["error"].startswith(f"{path}:2: not valid JSON")


def test_after_a_rollback_the_night_builds_on_what_latest_serves(config, monkeypatch):
    # A rollback (w4tui rollback, the Ollama pane's b) moved latest back to nightly-a: the next night
    # trained on nightly-b anyway, the build the person had just rolled back.
    import types

    from core.ollama.promote import record_move

    def move_at(t: float, action: str, build: str) -> None:
        monkeypatch.setattr("core.ollama.promote.time", types.SimpleNamespace(time=lambda: t))
        record_move(config, action, f"web4-agent:{build}")

    (config.paths.incoming / "incremental_2026-12-01.jsonl").write_text(GOOD)
    ledger = Ledger.open(config)
    ledger.upsert_build("nightly-a", adapter="/x/nightly-a", data={}, promoted=1, promoted_at=1.0)
    ledger.upsert_build("nightly-b", adapter="/x/nightly-b", parent_adapter="/x/nightly-a", promoted=1, promoted_at=2.0)
    move_at(1.9, "promoted", "nightly-b")  # verify's own promotion: recorded before its run ended
    assert make_plan(config, ledger).parent_adapter == "/x/nightly-b"
    move_at(10.0, "rolled back", "nightly-a")
    assert make_plan(config, ledger).parent_adapter == "/x/nightly-a"
    ledger.upsert_build("nightly-c", adapter="/x/nightly-c", promoted=1, promoted_at=20.0)
    assert make_plan(config, ledger).parent_adapter == "/x/nightly-c"  # a promotion after the rollback wins
    move_at(30.0, "promoted", "nightly-b")  # by hand, in the Ollama pane
    assert make_plan(config, ledger).parent_adapter == "/x/nightly-b"
