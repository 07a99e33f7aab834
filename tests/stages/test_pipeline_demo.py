"""The whole chain, as a newcomer runs it: `w4tui demo init`, then `w4tui pipeline` from download to
verify — real training, merge, GGUF conversion, llama.cpp quantization, deploy and verification
(against the Ollama stand-in, the only piece that is not the real thing here)."""

import json
import os
import subprocess
import sys

import pytest
from ollama_standin import OllamaStandIn

from core.events import read_events
from core.specs import NAMES as STAGES

pytestmark = pytest.mark.slow


def test_demo_pipeline_end_to_end(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install -e '.[llama]')")
    demo = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "w4tui", "demo", "init", str(demo)], check=True, capture_output=True)
    config = demo / "config.toml"
    # A shorter run than the demo's default, same path through every stage.
    config.write_text(
        config.read_text().replace("max_seq_length = 256", "max_seq_length = 96").replace("epochs = 1", "epochs = 0.3")
    )
    with OllamaStandIn() as ollama:
        ollama.add_library_model()
        env = {**os.environ, "OLLAMA_HOST": ollama.url}
        proc = subprocess.run(
            [sys.executable, "-m", "w4tui", "--config", str(config), "pipeline"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "pipeline succeeded: download > train > merge > convert > quantize > deploy > verify" in proc.stdout
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "w4tui", "--config", str(config), "status", "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        runs = {r["stage"]: r for r in status["runs"]}
        assert all(r["status"] == "succeeded" for r in runs.values()) and len(runs) == 8
        # The CLI ran the chain as a detached pipeline job, which recorded each step's run as an event.
        steps = [e for e in read_events(os.path.join(runs["pipeline"]["dir"], "events.jsonl")) if e.get("step_status")]
        assert [(e["step_stage"], e["step_run"]) for e in steps] == [(s, runs[s]["id"]) for s in STAGES]
        adapter = runs["train"]["artifacts"][-1]
        assert runs["merge"]["artifacts"] == [str(demo / "outputs" / "merged" / os.path.basename(adapter))]
        q4 = runs["quantize"]["artifacts"][-1]
        assert q4.endswith("-Q4_K_M.gguf") and os.path.exists(q4)
        build = runs["deploy"]["artifacts"][-1]
        assert build.startswith("web4-agent:build-")
        assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[build]["digest"]
