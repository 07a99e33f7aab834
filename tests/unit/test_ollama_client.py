"""w4tui.ollama_client against the Ollama stand-in: host choice, the calls the TUI makes, template
extraction, unloading, and failures as one OllamaError line."""

import subprocess
import sys

import pytest

pytest_plugins = ["ollama_fixtures"]
from ollama_standin import LIBRARY, OllamaStandIn

from w4tui import ollama_client as oc
from w4tui.config import load_config


def test_ollama_host_in_the_environment_wins_over_the_config(ollama, config_file, monkeypatch):
    config_file.write_text('[ollama]\nhost = "http://127.0.0.1:9"\n')
    assert oc.host(load_config()) == ollama.url  # OLLAMA_HOST, as the ollama CLI does
    assert [m["model"] for m in oc.list_models(load_config())] == [LIBRARY]
    monkeypatch.delenv("OLLAMA_HOST")
    with pytest.raises(oc.OllamaError, match=r"^Ollama is not reachable at http://127\.0\.0\.1:9; start it with"):
        oc.list_models(load_config())
    config_file.write_text(f'[ollama]\nhost = "{ollama.url}"\n')
    assert oc.version(load_config()) == "0.12.6"


def test_what_the_tui_reads(ollama, config_file):
    config = load_config()
    ollama.add_model(
        "web4-agent:b1",
        system="You are the Web4 agent.\nBe brief.",
        parameters={"num_ctx": 16384, "temperature": 0.0, "stop": ["<|im_end|>", 'say "hi"']},
    )
    listed = {m["model"]: m for m in oc.list_models(config)}
    assert listed["web4-agent:b1"]["details"]["quantization_level"] == "Q4_K_M"
    info = oc.show(config, "web4-agent:b1")
    assert info["system"] == "You are the Web4 agent.\nBe brief."  # read back from the Modelfile text
    assert info["weights"] == ollama.models["web4-agent:b1"]["blob"]
    assert oc.parse_parameters(info["parameters"]) == {
        "num_ctx": ["16384"],
        "stop": ["<|im_end|>", 'say "hi"'],
        "temperature": ["0"],
    }
    parts = list(oc.generate_stream(config, "web4-agent:b1", "Create a PDCA", {"num_predict": 5}))
    assert "".join(p.get("response", "") for p in parts).startswith("# PDCA:") and parts[-1]["eval_count"] == 5
    assert parts[-1]["done_reason"] == "length"
    assert [m["model"] for m in oc.running(config)] == ["web4-agent:b1"]
    assert oc.exists(config, "web4-agent:b1") and not oc.exists(config, "web4-agent")
    oc.copy(config, "web4-agent:b1", "web4-agent")
    assert oc.digests(config)["web4-agent:latest"] == listed["web4-agent:b1"]["digest"]
    oc.delete(config, "web4-agent")
    with pytest.raises(oc.OllamaError, match="model 'web4-agent:gone' not found"):
        oc.delete(config, "web4-agent:gone")
    with pytest.raises(oc.OllamaError, match='model "web4-agent:gone" not found'):
        oc.copy(config, "web4-agent:gone", "x")


def test_base_template_comes_from_the_live_server(ollama, config_file):
    ollama.models[LIBRARY]["template"] = "{{ .Prompt }} server's"
    ollama.models[LIBRARY]["parameters"] = {"stop": ["<|im_end|>"], "num_ctx": 4096}
    assert oc.base_template(load_config()) == ("{{ .Prompt }} server's", ["<|im_end|>"], LIBRARY)
    ollama.models[LIBRARY]["parameters"] = {}
    assert oc.base_template(load_config())[1] == ["<|im_end|>", "<|endoftext|>"]
    del ollama.models[LIBRARY]
    template, stops, source = oc.base_template(load_config())
    assert template == oc.builtin_template() and source.startswith("built-in Qwen2.5 template")
    ollama.http_errors["/api/show"] = (500, "disk I/O error")
    with pytest.raises(oc.OllamaError, match="disk I/O error"):  # not "not found": not a reason to fall back
        oc.base_template(load_config())


def test_unload_all_frees_every_running_model(ollama, config_file):
    ollama.add_model("web4-agent:latest")
    ollama.load(LIBRARY)
    ollama.load("web4-agent:latest")
    assert sorted(oc.unload_all(load_config())) == [LIBRARY, "web4-agent:latest"]
    assert oc.running(load_config()) == []
    unloads = [g for g in ollama.generates if g.get("keep_alive") == 0 and not g.get("prompt")]
    assert len(unloads) == 2
    assert oc.unload_all(load_config()) == []


def test_unreachable_or_old_servers(config_file, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    assert oc.unload_all(load_config()) == []  # nothing running is nothing to unload
    with pytest.raises(oc.OllamaError) as failure:
        oc.rollback(load_config())
    assert failure.value.message == "Ollama is not reachable at http://127.0.0.1:9"
    assert "ollama serve" in failure.value.hint
    with OllamaStandIn(version="0.5.4") as old:
        monkeypatch.setenv("OLLAMA_HOST", old.url)
        with pytest.raises(oc.OllamaError, match="Ollama 0.5.4 at .* is too old: deploying a GGUF needs 0.5.5"):
            oc.require_files_api(load_config())
        old.version = "0.0.0"  # a development build
        assert oc.require_files_api(load_config()) == "0.0.0"


def test_importable_without_torch_or_textual():
    code = (
        "import sys, w4tui.ollama_client, stages.ollama.checks, stages.ollama.modelfile, w4tui.gguf_header; "
        "print(sorted(m for m in ('torch', 'transformers', 'textual') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_starting_a_training_run_unloads_ollama_first(ollama, config_file, tmp_path):
    """Through the runner, as `w4tui run train`, the TUI and the pipeline start it."""
    from w4tui.runs.runner import Runner

    ollama.load(LIBRARY)
    run = Runner(load_config()).start(
        "train", ["--base_model", str(tmp_path / "none"), "--dataset", "x", "--output", str(tmp_path / "o")]
    )
    assert oc.running(load_config()) == []
    proc = subprocess.run([sys.executable, "-m", "w4tui", "unload"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "nothing loaded"
    assert run.stage == "train"
