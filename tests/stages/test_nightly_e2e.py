"""Whole nights on the demo's tiny model against the Ollama stand-in, through `w4tui nightly --now`:
real training, convert --adapter, quantization, deploy and verify --promote. A first night promotes, a
night without new data is skipped, a night whose verify fails leaves latest alone and the next one
trains from the last promoted adapter; a failure at each step is recorded with its error line; the
ledger can be rebuilt from the files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from ollama_standin import OllamaStandIn

from core.config import load_config
from w4tui.demo.samples import write_dataset
from w4tui.demo.workspace import init_demo
from w4tui.nightly.ledger import LEDGER_FILE, Ledger, rebuild

pytestmark = pytest.mark.slow
# The demo's incremental file is dated this day, not today: no result here depends on the date it runs.
DEMO_DAY = date(2026, 12, 1)
COMPARED = (
    "build",
    "night",
    "adapter",
    "parent_adapter",
    "base_model",
    "data",
    "hparams",
    "f16",
    "gguf",
    "quant",
    "tag",
    "runs",
    "sizes",
    "verify",
    "verify_error",
    "promoted",
    "promoted_at",
    "f16_deleted",
    "deleted",
)


@pytest.fixture
def demo(tmp_path):
    config = init_demo(tmp_path / "demo", samples=60, day=DEMO_DAY)
    config.write_text(config.read_text().replace("max_seq_length = 256", "max_seq_length = 96"))
    with OllamaStandIn() as ollama:
        ollama.add_library_model()
        yield config, ollama


def no_other_training(limit_s: float = 600) -> None:
    """The pre-flight refuses a second training on the machine: on a shared test host, wait for others'.
    Trainings of this test run's other xdist workers (the same PYTEST_XDIST_TESTRUNUID, inherited by the
    stages they start) are tiny and fit beside this one: waiting for them would only serialise the run."""
    import psutil

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")

    def other(p: psutil.Process) -> bool:
        if "stages.train_lora" not in " ".join(p.info["cmdline"] or []):
            return False
        try:
            return run is None or p.environ().get("PYTEST_XDIST_TESTRUNUID") != run
        except psutil.Error:
            return True

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not any(other(p) for p in psutil.process_iter(["cmdline"])):
            return
        time.sleep(1)


def night(config: Path, host: str) -> subprocess.CompletedProcess:
    no_other_training()
    env = {**os.environ, "OLLAMA_HOST": host}
    return subprocess.run(
        [sys.executable, "-m", "w4tui", "--config", str(config), "nightly", "--now"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def new_data(config: Path, day: str, seed: int) -> Path:
    return write_dataset(config.parent / "data" / "incoming" / f"incremental_{day}.jsonl", 10, seed=seed)


def last_night(config: Path) -> dict:
    return Ledger.open(load_config(config)).nights()[0]


def digest(ollama: OllamaStandIn, name: str) -> str | None:
    model = ollama.models.get(name)
    return model["digest"] if model else None


def test_nights_promote_skip_and_keep_latest_on_a_failed_verify(demo):
    config_file, ollama = demo
    config = load_config(config_file)
    first = night(config_file, ollama.url)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    one = last_night(config_file)
    assert one["outcome"] == "promoted" and one["reason"] == "first night: from the base" and one["samples"] > 0
    ledger = Ledger.open(config)
    b1 = ledger.build(one["build"])
    assert b1["parent_adapter"] is None and Path(b1["adapter"], "adapter_model.safetensors").is_file()
    assert list(b1["data"].values()) == [one["data_sha256"]]
    convert = json.loads((config.paths.runs / b1["runs"]["convert"] / "run.json").read_text())["command"]
    assert convert[convert.index("--adapter") + 1] == b1["adapter"]
    assert convert[convert.index("--model") + 1] == str(config.model.dir)  # from the base: no merged copy
    assert not (config.paths.outputs / "merged").exists()
    # one pass from base + adapter to Q4_K_M: no F16 GGUF was ever on disk, no quantize step ran
    assert Path(b1["gguf"]).is_file() and b1["quant"] == "Q4_K_M" and b1["f16"] is None and "quantize" not in b1["runs"]
    assert sorted(p.name for p in (config.paths.outputs / "gguf").iterdir() if p.suffix == ".gguf") == [
        Path(b1["gguf"]).name
    ]
    assert b1["verify"] == "passed" and b1["promoted"] == 1
    assert digest(ollama, "web4-agent:latest") == digest(ollama, b1["tag"])

    second = night(config_file, ollama.url)
    assert second.returncode == 0, second.stdout[-3000:]
    assert last_night(config_file)["outcome"] == "skipped" and "no new data" in last_night(config_file)["reason"]

    new_data(config_file, (DEMO_DAY + timedelta(days=1)).isoformat(), seed=7)
    failing = config_file.read_text() + '\n[verify.expect]\n"Create a PDCA for component creation" = ["NO SUCH TEXT"]\n'
    config_file.write_text(failing)
    third = night(config_file, ollama.url)
    assert third.returncode == 1, third.stdout[-3000:]
    three = last_night(config_file)
    assert three["outcome"] == "failed" and three["failed_step"] == "verify"
    assert "expected text missing: 'NO SUCH TEXT'" in three["error"]
    assert digest(ollama, "web4-agent:latest") == digest(ollama, b1["tag"])  # latest untouched
    assert ledger.build(three["build"])["promoted"] == 0

    config_file.write_text(failing.split("\n[verify.expect]")[0] + "\n")
    fourth = night(config_file, ollama.url)  # the same file again: it was never trained into a promoted build
    assert fourth.returncode == 0, fourth.stdout[-3000:]
    four = last_night(config_file)
    b4 = ledger.build(four["build"])
    assert four["outcome"] == "promoted" and four["data_file"] == three["data_file"]
    assert b4["parent_adapter"] == b1["adapter"] != ledger.build(three["build"])["adapter"]
    record = json.loads(Path(b4["adapter"], "training_run.json").read_text())
    assert record["args"]["resume_from"] == b1["adapter"]
    assert digest(ollama, "web4-agent:latest") == digest(ollama, b4["tag"])
    assert digest(ollama, "web4-agent:previous") == digest(ollama, b1["tag"])
    assert (
        "promoted"
        in subprocess.run(
            [sys.executable, "-m", "w4tui", "--config", str(config_file), "schedule"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    before = {b["build"]: {k: b[k] for k in COMPARED} for b in ledger.builds()}
    nights_before = [n["key"] for n in ledger.nights()]
    ledger.close()
    (config.paths.state / LEDGER_FILE).unlink()
    rebuilt = rebuild(config)
    assert {b["build"]: {k: b[k] for k in COMPARED} for b in rebuilt.builds()} == before
    assert [n["key"] for n in rebuilt.nights()] == nights_before


def test_a_failure_at_each_step_is_recorded_and_leaves_latest_alone(demo):
    config_file, ollama = demo
    config = load_config(config_file)
    incoming = config.paths.incoming / f"incremental_{DEMO_DAY.isoformat()}.jsonl"
    good = incoming.read_text()
    incoming.write_text(good + '{"messages": "not a list"}\n')
    bad = night(config_file, ollama.url)
    failed = last_night(config_file)
    assert bad.returncode == 1 and failed["failed_step"] == "data"
    assert f"{incoming}:{len(good.splitlines()) + 1}: 'messages' must be a non-empty list" in failed["error"]
    assert not list(config.paths.runs.glob("*-train-*"))  # stopped before any training
    incoming.write_text(good)

    marker = config.model.dir / "w4tui_merge.json"  # the base looks like a merged model: convert refuses
    marker.write_text("{}")
    assert night(config_file, ollama.url).returncode == 1
    assert last_night(config_file)["failed_step"] == "convert"
    assert "already has an adapter merged in" in last_night(config_file)["error"]
    marker.unlink()

    text = config_file.read_text()
    # [nightly] keep_f16: the F16 is written and quantized by the quantize stage, whose failure is named
    config_file.write_text(
        text + '\n[tools]\nllama_quantize = "/nonexistent/llama-quantize"\n[nightly]\nkeep_f16 = true\n'
    )
    assert night(config_file, ollama.url).returncode == 1
    assert last_night(config_file)["failed_step"] == "quantize"
    assert "llama_quantize points at /nonexistent/llama-quantize" in last_night(config_file)["error"]
    config_file.write_text(text)

    down = night(config_file, "http://127.0.0.1:9")
    assert down.returncode == 1
    lines = down.stdout.splitlines()  # the night said so before it trained
    warned = next(i for i, line in enumerate(lines) if line.startswith("warning:") and "127.0.0.1:9" in line)
    assert warned < next(i for i, line in enumerate(lines) if line.startswith("== train")), down.stdout
    assert last_night(config_file)["failed_step"] == "deploy"
    assert "127.0.0.1:9" in last_night(config_file)["error"]
    assert "web4-agent:latest" not in ollama.models  # nothing was ever promoted
    outcomes = [n["outcome"] for n in Ledger.open(config).nights()]
    assert outcomes == ["failed"] * 4
