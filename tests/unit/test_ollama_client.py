"""core.ollama.client against the Ollama stand-in: host choice, the calls the TUI makes, template
extraction, unloading, and failures as one OllamaError line."""

import subprocess
import sys

import pytest

pytest_plugins = ["ollama_fixtures"]
from ollama_standin import LIBRARY, LIBRARY_TEMPLATE, OllamaStandIn

from core.config import load_config
from core.ollama import client as oc
from core.ollama import promote as op


def test_ollama_host_in_the_environment_wins_over_the_config(ollama, config_file, monkeypatch):
    config_file.write_text('[ollama]\nhost = "http://127.0.0.1:9"\n')
    assert oc.host(load_config()) == ollama.url  # OLLAMA_HOST, as the ollama CLI does
    assert [m["model"] for m in oc.list_models(load_config())] == [LIBRARY]
    monkeypatch.delenv("OLLAMA_HOST")
    with pytest.raises(oc.OllamaError, match=r"^Ollama is not reachable at http://127\.0\.0\.1:9; start it with"):
        oc.list_models(load_config())
    config_file.write_text(f'[ollama]\nhost = "{ollama.url}"\n')
    assert oc.version(load_config()) == ollama.version


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
    served = LIBRARY_TEMPLATE + "{{/* server's */}}"
    ollama.models[LIBRARY]["template"] = served
    ollama.models[LIBRARY]["parameters"] = {"stop": ["<|im_end|>"], "num_ctx": 4096}
    assert oc.base_template(load_config()) == (served, ["<|im_end|>"], LIBRARY, LIBRARY)
    ollama.models[LIBRARY]["parameters"] = {}  # item 9: the library model has no stop PARAMETERs
    template, stops, source, stops_from = oc.base_template(load_config())
    assert (template, source) == (served, LIBRARY) and stops == ["<|im_end|>", "<|endoftext|>"]
    assert stops_from == f"built-in stops ({LIBRARY} has no stop PARAMETERs)"
    del ollama.models[LIBRARY]
    template, stops, source, _ = oc.base_template(load_config())
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
        op.rollback(load_config())
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
        "import sys, core.ollama.client, stages.ollama.checks, stages.ollama.modelfile, core.gguf_header; "
        "print(sorted(m for m in ('torch', 'transformers', 'textual') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_starting_a_training_run_unloads_ollama_first(ollama, config_file, tmp_path):
    """Through w4tui/runs/start.py, as `w4tui run train`, the TUI and the pipeline start it."""
    from w4tui.runs.runner import Runner
    from w4tui.runs.start import checked_start

    ollama.load(LIBRARY)
    runner = Runner(load_config())
    args = ["--base_model", str(tmp_path / "none"), "--dataset", "x", "--output", str(tmp_path / "o")]
    # force: no pre-flight, whose 7B estimate need not fit this machine
    run = checked_start(runner, runner.invocation("train", args=args), force=True)
    assert oc.running(load_config()) == []
    proc = subprocess.run([sys.executable, "-m", "w4tui", "unload"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "nothing loaded"
    assert run.stage == "train"


@pytest.mark.parametrize(
    "template,why",
    [
        ("", "has no TEMPLATE (the server reports {{ .Prompt }})"),  # 0.30+ shows {{ .Prompt }} for it
        ("{{ .Prompt }}", "has no TEMPLATE"),
        ("{%- for m in messages %}<|im_start|>{{ m.role }}<|im_end|>{% endfor %}", "reports a Jinja chat template"),
        ("### User:\n{{ .Prompt }}\n### Assistant:\n", "has a TEMPLATE without the ChatML markers"),
    ],
)
def test_a_base_without_a_usable_template_falls_back_to_the_builtin_one(ollama, config_file, template, why):
    """Item 3: images.go GetModel reports template.DefaultTemplate ({{ .Prompt }}), never ""."""
    ollama.models[LIBRARY]["template"] = template
    got, stops, source, stops_from = oc.base_template(load_config())
    assert got == oc.builtin_template() and stops == ["<|im_end|>", "<|endoftext|>"]
    assert source.startswith(f"built-in Qwen2.5 template ({LIBRARY} {why}") and stops_from == "built-in stops"


def test_a_renderer_parser_base_falls_back_too(ollama, config_file):
    """Item 3: a RENDERER/PARSER model (images.go Model.String writes them) renders in Go code."""
    original = oc.show

    def with_renderer(config, model):
        info = original(config, model)
        info["renderer"] = "qwen3-coder" if model == LIBRARY else ""
        return info

    oc.show = with_renderer
    try:
        template, _, source, _ = oc.base_template(load_config())
    finally:
        oc.show = original
    assert template == oc.builtin_template() and "renders with RENDERER/PARSER qwen3-coder" in source


def test_show_reads_system_in_each_of_the_servers_quotings(modern_ollama, config_file):
    """Item 5: parser.go quote() writes a one-line SYSTEM bare, "…" with newlines, \"\"\"…\"\"\" with both."""
    config = load_config()
    cases = {
        "one": "You are the Web4 agent.",
        "lines": "You are the Web4 agent.\nBe brief.",
        "quotes": 'You are the "Web4" agent.\nBe brief.',
        "spaced": " leading space",
    }
    for tag, system in cases.items():
        modern_ollama.add_model(f"web4-agent:{tag}", system=system, parameters={"stop": ["<|im_end|>"], "num_ctx": 4})
    for tag, system in cases.items():
        info = oc.show(config, f"web4-agent:{tag}")
        assert info["system"] == system, info["modelfile"]
        assert info["weights"] == modern_ollama.models[f"web4-agent:{tag}"]["blob"]
    assert "SYSTEM You are the Web4 agent.\nTEMPLATE" not in oc.show(config, "web4-agent:one")["modelfile"]


@pytest.mark.parametrize(
    "setting,url",
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11500", "http://127.0.0.1:11500"),
        ("127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("[::]:9000", "http://[::1]:9000"),
    ],
)
def test_host_is_read_as_ollamas_cli_reads_it(config_file, monkeypatch, setting, url):
    """Item 11: envconfig/config.go Host() and ConnectableHost()."""
    monkeypatch.setenv("OLLAMA_HOST", setting)
    assert oc.host(load_config()) == url


def test_a_bind_address_and_a_bare_host_port_reach_the_server(ollama, config_file, monkeypatch):
    port = ollama.url.rsplit(":", 1)[1]
    for setting in (f"0.0.0.0:{port}", f"127.0.0.1:{port}"):
        monkeypatch.setenv("OLLAMA_HOST", setting)
        assert [m["model"] for m in oc.list_models(load_config())] == [LIBRARY]
    monkeypatch.delenv("OLLAMA_HOST")
    config_file.write_text(f'[ollama]\nhost = "127.0.0.1:{port}"\n')  # no scheme, as OLLAMA_HOST may be
    assert oc.version(load_config()) == ollama.version


def test_create_of_an_existing_name_overwrites_it(ollama, config_file):
    """Item 12: server/create.go writes the new manifest over the old one (deploy refuses before that)."""
    config = load_config()
    ollama.add_model("web4-agent:b1", system="old")
    parts = list(oc.create(config, "web4-agent:b1", from_=LIBRARY, system="new"))
    assert parts[-1]["status"] == "success" and oc.show(config, "web4-agent:b1")["system"] == "new"
