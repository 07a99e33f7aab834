from core import units

"""The deploy stage against the Ollama stand-in, through the official client: the blob, the create
request (TEMPLATE and stops from the live base model, SYSTEM, PARAMETERs), the Modelfile on disk, immutable
build tags, server-side quantization, and one-line errors that never touch latest."""

import json
import re
import subprocess
import sys

import pytest

pytest_plugins = ["ollama_fixtures"]
from ollama_standin import LIBRARY, LIBRARY_TEMPLATE

from core.ollama import modelfile as ollama_modelfile
from core.ollama.client import builtin_template

BUILD = "web4-agent:build-20261126-2130"
PARAMS = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.1, "num_ctx": 16384}


def parse_modelfile(text: str) -> dict:
    """The Modelfile as `ollama create -f` reads it (parser/parser.go ParseFile, then api.FormatParams
    turning PARAMETER values into numbers; stop is a list)."""
    out = {"parameters": {}}
    for name, value in ollama_modelfile.parse(text):
        if name in ("from", "template", "system"):
            out[name] = value
        elif name == "stop":
            out["parameters"].setdefault("stop", []).append(value)
        else:
            out["parameters"][name] = int(value) if re.fullmatch(r"-?\d+", value) else float(value)
    return out


def test_deploy_creates_the_build_with_the_live_template_and_writes_its_modelfile(
    tmp_path, ollama, run_stage, tiny_q8_gguf
):
    ollama.models[LIBRARY]["template"] = LIBRARY_TEMPLATE + "{{/* as the server has it */}}"
    ollama.models[LIBRARY]["parameters"] = {"stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]}
    gguf = tmp_path / "build.gguf"
    gguf.write_bytes(tiny_q8_gguf.read_bytes())
    result = run_stage("deploy_ollama", "--gguf", gguf, "--tag", "build-20261126-2130")
    assert result.rc == 0, result.stderr
    create = ollama.creates[-1]
    assert create["model"] == BUILD and create["template"] == ollama.models[LIBRARY]["template"]
    assert create["parameters"] == {**PARAMS, "stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]}
    assert create["system"].startswith("You are the Web4 agent") and "quantize" not in create
    digest = create["files"]["build.gguf"]
    assert ollama.blobs[digest].read_bytes() == gguf.read_bytes()  # the server checked the sha256 too
    served = ollama.models[BUILD]
    assert served["quantize"] == "Q8_0"  # read from the uploaded GGUF's header
    assert (served["blob"] != digest) is ollama.modern  # 0.30+ rewrites it (llama-quantize COPY)
    artifact = result.artifact
    assert artifact["type"] == "ollama" and artifact["path"] == BUILD and artifact["parent"] == str(gguf)
    assert artifact["digest"] == served["digest"] and artifact["gguf_digest"] == digest
    assert artifact["weights_digest"] == served["blob"]
    assert artifact["quant"] == "Q8_0" and artifact["template_from"] == LIBRARY
    assert artifact["server"] == ollama.version and artifact["stops_from"] == LIBRARY
    messages = [e["message"] for e in result.of("progress") if e.get("message")]
    assert "hashing" in messages and "uploading" in messages
    assert ("validating GGUF model" in messages) is ollama.modern
    assert messages[-1] == "ollama: success" and "ollama: writing manifest" in messages  # the create stream
    assert "web4-agent:latest" not in ollama.models  # only verification promotes
    # The Modelfile beside the GGUF reproduces the same create by hand
    modelfile = parse_modelfile(gguf.with_suffix(".Modelfile").read_text())
    assert modelfile == {
        "from": str(gguf),
        "template": create["template"],
        "system": create["system"],
        "parameters": create["parameters"],
    }
    assert f"ollama create {BUILD} -f build.Modelfile" in gguf.with_suffix(".Modelfile").read_text()


def test_blob_is_sent_once_and_build_tags_are_immutable(tmp_path, ollama, run_stage, tiny_q8_gguf, tiny_f16_gguf):
    def uploads():
        return sum(1 for m, p in ollama.requests if m == "POST" and p.startswith("/api/blobs/"))

    assert run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b1").rc == 0
    assert uploads() == 1
    second = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b2")
    assert second.rc == 0 and uploads() == 1  # HEAD found the digest
    assert any("already has sha256:" in e["message"] for e in second.of("log"))
    again = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b2")  # the same build: nothing to do
    assert again.rc == 0 and len(ollama.creates) == 2 and again.artifact["path"] == "web4-agent:b2"
    other = run_stage("deploy_ollama", "--gguf", tiny_f16_gguf, "--tag", "b2", "--quantize", "none")
    assert other.rc == 1 and "web4-agent:b2 already exists on the server and is not this build" in other.stderr
    assert "ollama rm web4-agent:b2" in other.stderr


def test_an_f16_gguf_is_quantized_by_ollama_when_there_is_no_quantizer(ollama, run_stage, tiny_f16_gguf):
    result = run_stage("deploy_ollama", "--gguf", tiny_f16_gguf, "--tag", "b1")
    assert result.rc == 0, result.stderr
    assert ollama.creates[-1]["quantize"] == "q4_K_M"  # [quantize] type, in Ollama's spelling
    assert ollama.models["web4-agent:b1"]["quantize"] == "Q4_K_M"
    assert result.artifact["quant"] == "Q4_K_M" and result.artifact["server_quantize"] == "q4_K_M"
    quantizing = [e for e in result.of("progress") if e.get("message", "").startswith("quantizing F16")]
    assert quantizing[-1]["done"] == quantizing[-1]["total"] > 0
    plain = run_stage("deploy_ollama", "--gguf", tiny_f16_gguf, "--tag", "b2", "--quantize", "none")
    assert plain.rc == 0 and "quantize" not in ollama.creates[-1]
    assert ollama.models["web4-agent:b2"]["quantize"] == "F16"
    assert any("Ollama will serve it unquantized" in e["message"] for e in plain.of("log"))


@pytest.mark.parametrize("base", ["missing", "no template"])
def test_without_the_base_model_the_builtin_chatml_template_is_used(ollama, run_stage, tiny_q8_gguf, base):
    if base == "missing":
        del ollama.models[LIBRARY]
    else:
        ollama.models[LIBRARY]["template"] = ""
    result = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b1")
    assert result.rc == 0, result.stderr
    create = ollama.creates[-1]
    assert create["template"] == builtin_template() and "<|im_start|>assistant" in create["template"]
    assert create["parameters"]["stop"] == ["<|im_end|>", "<|endoftext|>"]
    warning = next(e for e in result.of("log") if e["level"] == "warning")
    assert "built-in Qwen2.5 template" in warning["message"]


@pytest.mark.parametrize(
    "case,expected",
    [
        (
            "down",
            "error: Ollama is not reachable at http://127.0.0.1:9 (start it with `ollama serve` or the Ollama app",
        ),
        ("old", "Ollama 0.5.4 at http://127.0.0.1:"),
        ("stream", "error: Ollama could not create web4-agent:b1: unsupported architecture"),
        ("requantize", "--quantize q8_0: "),
        ("latest", "error: --tag latest: 'latest' and 'previous' move only by verified promotion and rollback"),
        ("local", "error: --tag local: Ollama reads a ':local' tag as a source selector"),  # item 7
        ("cloud", "error: --tag build-1-cloud: Ollama reads a '-cloud' tag as a source selector"),
        ("long", "error: --tag " + "t" * 81 + ": the tag is 81 characters long; Ollama allows at most 80"),
        ("f32", "tiny-f32.gguf is F32, which Ollama reads as an unknown file type and will not quantize"),  # item 8
        ("no file_type", "is without general.file_type, which Ollama reads as an unknown file type"),
        ("lost blob", "open /root/.ollama/models/blobs/sha256-"),  # item 12
        ("case", "web4-agent:B1: the server already has web4-agent:b1, and Ollama treats names that differ only"),
        ("not gguf", "not a GGUF file"),
        ("missing", "nowhere.gguf: no such file (run the quantize stage first)"),
    ],
)
def test_deploy_errors_are_one_actionable_line(
    tmp_path, ollama, run_stage, tiny_q8_gguf, tiny_f32_gguf, case, expected, monkeypatch
):
    args = ["--gguf", tiny_q8_gguf, "--tag", "b1"]
    if case == "down":
        monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    elif case == "old":
        ollama.version = "0.5.4"
    elif case == "stream":
        ollama.fail_create = "unsupported architecture"
    elif case == "requantize":
        args += ["--quantize", "q8_0"]
    elif case in ("latest", "local"):
        args[3] = case
    elif case == "cloud":
        args[3] = "build-1-cloud"
    elif case == "long":
        args[3] = "t" * 81
    elif case == "f32":
        args = ["--gguf", tiny_f32_gguf, "--tag", "b1", "--quantize", "q4_K_M"]
    elif case == "no file_type":
        args = ["--gguf", without_file_type(tiny_f32_gguf, tmp_path / "nft.gguf"), "--tag", "b1"]  # auto: Q4_K_M
    elif case == "lost blob":
        ollama.forget_blobs = True  # a server restart between upload and create prunes the blob
    elif case == "case":
        ollama.add_model("web4-agent:b1")
        args[3] = "B1"
    elif case == "not gguf":
        args[1] = tmp_path / "x.gguf"
        args[1].write_text("hello")
    else:
        args[1] = tmp_path / "nowhere.gguf"
    result = run_stage("deploy_ollama", *args)
    assert result.rc == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr
    assert result.events[-1]["kind"] == "error" and not result.of("artifact")
    if case == "old":
        assert "needs 0.5.5 or newer" in result.stderr and "ollama create NAME -f FILE" in result.stderr
    if case in ("f32", "no file_type"):  # refused before anything was uploaded, with the fix
        assert "convert with --outtype f16" in result.stderr and not ollama.blobs and not ollama.creates
    if case == "lost blob":
        assert "run deploy again: it uploads the GGUF again" in result.stderr
        assert [e["message"] for e in result.of("progress")][-1] == "ollama: parsing GGUF"
    assert "web4-agent:latest" not in ollama.models and ("web4-agent:b1" not in ollama.models) is (case != "case")


def without_file_type(source, out):
    """A copy of a GGUF without general.file_type (what some converters write)."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, arch=str(reader.fields["general.architecture"].contents()))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, value, kind)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_deploy_runs_as_a_module(tmp_path, ollama, tiny_q8_gguf):
    events = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "stages.deploy_ollama", "--gguf", str(tiny_q8_gguf), "--tag", "b9"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "W4TUI_EVENTS": str(events)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "web4-agent:b9" in ollama.models and proc.stderr == ""


def test_a_repeat_deploy_is_recognised_although_the_server_rewrote_the_gguf(modern_ollama, run_stage, tiny_q8_gguf):
    """Item 1: 0.30+ passes every GGUF through llama-quantize COPY (create.go copyLayerWithLlamaQuantize):
    the served weights are not the uploaded blob, so deploy knows its builds from its own record."""
    first = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b1")
    assert first.rc == 0, first.stderr
    served = modern_ollama.models["web4-agent:b1"]["blob"]
    assert served != first.artifact["gguf_digest"] and first.artifact["weights_digest"] == served
    size = tiny_q8_gguf.stat().st_size
    rewrite = next(e["message"] for e in first.of("log") if "rewrote the GGUF" in e["message"])
    assert "llama-quantize COPY" in rewrite and "stays in the server's blob store until the server restarts" in rewrite
    assert units.size(size) in rewrite
    validating = [e for e in first.of("progress") if e.get("message") == "validating GGUF model"]
    assert (
        validating and validating[-1]["done"] == validating[-1]["total"] == size and validating[-1]["unit"] == "bytes"
    )
    again = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b1")
    assert again.rc == 0, again.stderr
    assert len(modern_ollama.creates) == 1 and any("nothing to do" in e["message"] for e in again.of("log"))


def test_stops_not_found_on_the_base_are_said_to_be_built_in(ollama, run_stage, tiny_q8_gguf):
    """Item 9: the library qwen2.5-coder Modelfile has no stop PARAMETERs."""
    ollama.models[LIBRARY]["parameters"] = {"temperature": 0.7}
    result = run_stage("deploy_ollama", "--gguf", tiny_q8_gguf, "--tag", "b1")
    assert result.rc == 0, result.stderr
    logs = [e["message"] for e in result.of("log")]
    assert f"TEMPLATE from {LIBRARY}" in logs
    assert f"stop tokens ['<|im_end|>', '<|endoftext|>'] from built-in stops ({LIBRARY} has no stop PARAMETERs)" in logs
    assert ollama.creates[-1]["parameters"]["stop"] == ["<|im_end|>", "<|endoftext|>"]


@pytest.mark.parametrize(
    "system",
    [
        'You are the "Web4" agent.',
        'You are the Web4 agent.\nSay "done" at the end.',
        "Line one\nline two",
        '"Quoted" start',
    ],
)
def test_the_modelfile_reads_back_as_the_same_build(tmp_path, ollama, run_stage, tiny_q8_gguf, config_file, system):
    """Item 10: parser.go unquote strips the surrounding quotes only; no backslash escapes."""
    config_file.write_text(f"[ollama]\nsystem = {json.dumps(system)}\n")
    gguf = tmp_path / "b.gguf"
    gguf.write_bytes(tiny_q8_gguf.read_bytes())
    result = run_stage("deploy_ollama", "--gguf", gguf, "--tag", "b1")
    assert result.rc == 0, result.stderr
    create = ollama.creates[-1]
    assert create["system"] == system
    modelfile = parse_modelfile(gguf.with_suffix(".Modelfile").read_text())
    assert modelfile["system"] == system and modelfile["template"] == create["template"]
    assert modelfile["parameters"] == create["parameters"]


def test_a_stop_with_quotes_or_backslashes_reads_back_unchanged(tmp_path, ollama, run_stage, tiny_q8_gguf):
    """Item 10: parser.go unquote strips the surrounding quotes only, so "\\"" would reach the server as
    a backslash and a quote."""
    stops = ["<|im_end|>", 'User "quoted":', "C:\\path", " padded "]
    ollama.models[LIBRARY]["parameters"] = {"stop": stops}
    gguf = tmp_path / "s.gguf"
    gguf.write_bytes(tiny_q8_gguf.read_bytes())
    result = run_stage("deploy_ollama", "--gguf", gguf, "--tag", "b1")
    assert result.rc == 0, result.stderr
    assert ollama.creates[-1]["parameters"]["stop"] == stops
    assert parse_modelfile(gguf.with_suffix(".Modelfile").read_text())["parameters"]["stop"] == stops
