"""Quantize, deploy, verify, promote and roll back — against a stand-in Ollama server speaking its REST
API on 127.0.0.1, through the same ollama client code path as production."""

import os
import subprocess
import sys

import pytest

from ollama_standin import LIBRARY_TEMPLATE, OllamaStandIn
from w4tui import ollama_client as oc
from w4tui.config import load_config
from w4tui.events import read_events


@pytest.fixture
def ollama(monkeypatch, config_file):
    with OllamaStandIn() as server:
        server.add_library_model()
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        yield server


def stage(module, *args, tmp_path, env=None):
    events = tmp_path / f"{module}-{len(list(tmp_path.glob('*.jsonl')))}.jsonl"
    proc = subprocess.run([sys.executable, "-m", f"stages.{module}", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "W4TUI_EVENTS": str(events), "W4TUI_RUN_ID": "t", **(env or {})})
    return proc, read_events(events)


@pytest.fixture(scope="module")
def f16_gguf(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    proc = subprocess.run([sys.executable, "-m", "stages.convert_gguf", "--model", str(tiny_model), "--output",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def q4_model(tmp_path_factory):
    """Rows of 256 values: Q4_K_M applies for real (the tiny model's 64 would fall back per tensor)."""
    from w4tui.tinymodel import Shape, build_model

    root = tmp_path_factory.mktemp("q4")
    model = build_model(root / "m", Shape(hidden=256, layers=1, ffn=512, heads=4, kv_heads=2, tied=True), shards=1)
    out = root / "m-f16.gguf"
    subprocess.run([sys.executable, "-m", "stages.convert_gguf", "--model", str(model), "--output", str(out)], check=True,
                   capture_output=True)
    return out


def test_quantize_q4_k_m_loads_and_generates_in_llama_cpp(tmp_path, q4_model):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install -e '.[llama]')")
    from gguf import GGUFReader

    out = tmp_path / "m-Q4_K_M.gguf"
    proc, events = stage("quantize", "--input", q4_model, "--output", out, "--type", "Q4_K_M", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    reader = GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"].startswith(("Q4_K", "Q5_K", "Q6_K"))
    assert out.stat().st_size < q4_model.stat().st_size / 2  # the tied embedding stays at 6 bits
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["quant"] == "Q4_K_M" and artifact["parent"] == str(q4_model)
    assert any(e["kind"] == "progress" for e in events)
    model = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False)
    text = model.create_completion("Create a PDCA", max_tokens=8, temperature=0)["choices"][0]["text"]
    assert isinstance(text, str) and model.n_vocab() == 151936


def test_quantize_errors(tmp_path, f16_gguf):
    proc, _ = stage("quantize", "--input", tmp_path / "none.gguf", "--output", tmp_path / "q.gguf", tmp_path=tmp_path)
    assert proc.returncode == 1 and "none.gguf: no such file" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all" * 10)
    proc, _ = stage("quantize", "--input", tmp_path / "bad.gguf", "--output", tmp_path / "q.gguf", tmp_path=tmp_path)
    assert proc.returncode == 1 and "not a readable GGUF file" in proc.stderr
    config = tmp_path / "c.toml"
    config.write_text('[tools]\nllama_quantize = "/nowhere/llama-quantize"\n')
    proc, _ = stage("quantize", "--input", f16_gguf, "--output", tmp_path / "q.gguf", tmp_path=tmp_path,
                    env={"W4TUI_CONFIG": str(config)})
    assert "[tools] llama_quantize points at /nowhere/llama-quantize" in proc.stderr
    assert not (tmp_path / "q.gguf").exists()


def test_without_any_quantizer_it_says_how_or_defers_to_ollama(tmp_path, f16_gguf, monkeypatch):
    import stages.quantize as q

    monkeypatch.setattr(q, "has_binding", lambda: False)
    monkeypatch.setattr(q.shutil, "which", lambda name: None)
    monkeypatch.setenv("W4TUI_EVENTS", str(tmp_path / "e.jsonl"))
    config = tmp_path / "c.toml"
    config.write_text("[quantize]\nollama_fallback = false\n")
    monkeypatch.setenv("W4TUI_CONFIG", str(config))
    assert q.main(["--input", str(f16_gguf), "--output", str(tmp_path / "q.gguf")]) == 1
    assert read_events(tmp_path / "e.jsonl")[-1]["message"].startswith("no llama.cpp quantizer found: install llama.cpp")
    config.write_text("")
    assert q.main(["--input", str(f16_gguf), "--output", str(tmp_path / "q.gguf")]) == 0
    artifact = [e for e in read_events(tmp_path / "e.jsonl") if e["kind"] == "artifact"][-1]
    assert artifact["path"] == str(f16_gguf) and artifact["defer_quantize"] == "Q4_K_M"


def test_deploy_uses_the_library_template_and_stops_and_writes_the_modelfile(tmp_path, ollama, f16_gguf):
    gguf = tmp_path / "build.gguf"
    gguf.write_bytes(f16_gguf.read_bytes())
    proc, events = stage("deploy_ollama", "--gguf", gguf, "--tag", "build-20261126-2130", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    create = ollama.creates[-1]
    assert create["model"] == "web4-agent:build-20261126-2130" and create["template"] == LIBRARY_TEMPLATE
    assert create["parameters"] == {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.1,
                                    "num_ctx": 16384, "stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]}
    assert create["system"].startswith("You are the Web4 agent")
    assert create["quantize"] == "q4_K_M"  # an F16 file: Ollama quantizes ([quantize] ollama_fallback)
    assert list(create["files"]) == ["build.gguf"] and create["files"]["build.gguf"] in ollama.blobs
    modelfile = gguf.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith(f"FROM {gguf}\nTEMPLATE \"\"\"{LIBRARY_TEMPLATE}\"\"\"")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER num_ctx 16384" in modelfile
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "ollama" and artifact["path"] == "web4-agent:build-20261126-2130"
    assert "web4-agent:latest" not in ollama.models  # only verification promotes
    # the same file again: the server has the blob, so it is not uploaded twice
    posts = sum(1 for m, p in ollama.requests if m == "POST" and p.startswith("/api/blobs"))
    proc, _ = stage("deploy_ollama", "--gguf", gguf, "--tag", "build-2", "--quantize", "q8_0", tmp_path=tmp_path)
    assert proc.returncode == 0 and posts == sum(1 for m, p in ollama.requests if m == "POST" and p.startswith("/api/blobs"))


def test_deploy_falls_back_to_the_builtin_template(tmp_path, ollama, f16_gguf):
    del ollama.models["qwen2.5-coder:7b-instruct-q4_K_M"]
    proc, events = stage("deploy_ollama", "--gguf", f16_gguf, "--tag", "b1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    template = ollama.creates[-1]["template"]
    assert "<|im_start|>assistant" in template and template == oc.base_template(load_config())[0]
    assert ollama.creates[-1]["parameters"]["stop"] == ["<|im_end|>", "<|endoftext|>"]
    assert any("built-in Qwen2.5 template" in e.get("message", "") for e in events)


@pytest.mark.parametrize("case,expected", [
    ("down", "Ollama is not reachable at http://127.0.0.1:9"),
    ("old", "Ollama 0.5.1 at http://127.0.0.1:"),
    ("stream", "Ollama at http://127.0.0.1:"),
    ("latest", "--tag latest: give a build tag"),
])
def test_deploy_errors_are_actionable(tmp_path, ollama, f16_gguf, case, expected, monkeypatch):
    tag = "b1"
    if case == "down":
        monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    elif case == "old":
        ollama.version = "0.5.1"
    elif case == "stream":
        ollama.fail_create = "unsupported architecture"
    else:
        tag = "latest"
    proc, events = stage("deploy_ollama", "--gguf", f16_gguf, "--tag", tag, tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and expected in line, line
    if case == "stream":
        assert "unsupported architecture" in line
    if case == "old":
        assert "needs 0.5.5 or newer" in line
    assert events[-1]["kind"] == "error" and "web4-agent:latest" not in ollama.models


def deploy(ollama, tmp_path, f16_gguf, tag):
    proc, _ = stage("deploy_ollama", "--gguf", f16_gguf, "--tag", tag, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return f"web4-agent:{tag}"


def test_verify_promotes_a_good_build_and_keeps_the_previous(tmp_path, ollama, f16_gguf):
    first = deploy(ollama, tmp_path, f16_gguf, "b1")
    proc, events = stage("verify", "--model", first, "--promote", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["passed"] and artifact["promoted"] and artifact["p1_tokens_per_s"] == 50.0
    assert artifact["p1_load_s"] == 0.3 and artifact["p1_ttft_s"] >= 0
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[first]["digest"]
    second = deploy(ollama, tmp_path, f16_gguf, "b2")
    ollama.models[second]["digest"] = "2" * 64
    proc, _ = stage("verify", "--model", second, "--promote", tmp_path=tmp_path)
    assert proc.returncode == 0
    assert ollama.models["web4-agent:latest"]["digest"] == "2" * 64
    assert ollama.models["web4-agent:previous"]["digest"] == ollama.models[first]["digest"]
    proc = subprocess.run([sys.executable, "-m", "w4tui", "rollback"], capture_output=True, text=True)
    assert proc.returncode == 0 and "rolled back" in proc.stdout
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[first]["digest"]


@pytest.mark.parametrize("behaviour,problem", [
    ("empty", "empty answer"),
    ("length", "ran into the token limit"),
    ("repeat", "degenerate repetition"),
    ("leak", "template tokens in the answer: <|im_start|>"),
    ("normal", "expected text missing: '## Risks'"),
])
def test_verify_catches_broken_models_and_never_touches_latest(tmp_path, ollama, f16_gguf, behaviour, problem):
    good = deploy(ollama, tmp_path, f16_gguf, "good")
    assert stage("verify", "--model", good, "--promote", tmp_path=tmp_path)[0].returncode == 0
    bad = deploy(ollama, tmp_path, f16_gguf, "bad")
    ollama.behaviour[bad] = behaviour
    args = ["--expect", "## Risks"] if behaviour == "normal" else []
    proc, events = stage("verify", "--model", bad, "--promote", "--num_predict", "64", *args, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert problem in proc.stderr and "latest was not touched" in proc.stderr
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["passed"] is False and artifact["promoted"] is False
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[good]["digest"]


def test_client_functions_for_the_tui(ollama, config_file):
    config = load_config()
    assert oc.host(config) == ollama.url  # OLLAMA_HOST wins over [ollama] host
    assert [m["model"] for m in oc.list_models(config)] == ["qwen2.5-coder:7b-instruct-q4_K_M"]
    parts = list(oc.generate_stream(config, "qwen2.5-coder:7b-instruct-q4_K_M", "hi", {"num_predict": 5}))
    assert parts[-1]["done"] and parts[-1]["eval_count"] == 5
    assert [m["model"] for m in oc.running(config)] == ["qwen2.5-coder:7b-instruct-q4_K_M"]
    assert oc.unload_all(config) == ["qwen2.5-coder:7b-instruct-q4_K_M"] and oc.running(config) == []
    with pytest.raises(oc.OllamaError, match="model 'nope' not found"):
        oc.delete(config, "nope")
    with pytest.raises(oc.OllamaError, match="no web4-agent:previous to roll back to"):
        oc.rollback(config)
    assert oc.parse_parameters('stop "<|im_end|>"\nnum_ctx 4096\nstop "x y"') == {
        "stop": ["<|im_end|>", "x y"], "num_ctx": ["4096"]}


def test_ollama_down_is_one_clear_error(config_file, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    with pytest.raises(oc.OllamaError, match="Ollama is not reachable at http://127.0.0.1:9"):
        oc.list_models(load_config())
    assert oc.unload_all(load_config()) == []  # nothing running is nothing to unload
