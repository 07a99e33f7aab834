"""Inference figures per build in verify, against the Ollama stand-in: tokens/s, time to first token,
load time and /api/ps memory stored with the build beside the expected ranges; out of range is a
warning, never a failure."""

pytest_plugins = ["ollama_fixtures"]


def build(ollama, tag: str, size: int = 4_683_087_332) -> str:
    name = f"web4-agent:{tag}"
    ollama.add_model(name, parameters={"temperature": 0.0, "stop": ["<|im_end|>"]}, size=size)
    ollama.load(name)  # loaded already: the first token's time is the model's, not the load's
    return name


def test_figures_are_stored_and_out_of_range_is_a_warning(ollama, run_stage, config_file):
    config_file.write_text("[verify]\nregression = []\n")
    ollama.first_token_delay = 0.2
    model = build(ollama, "build-1")
    result = run_stage("verify", "--model", model)
    assert result.rc == 0, result.stderr  # a warning does not fail the build
    a = result.artifact
    assert a["passed"] is True and a["inference_tokens_per_s"] == 40.0  # 25 ms a token on the stand-in
    assert 180 <= a["inference_ttft_ms"] < 400 and a["inference_load_s"] == 0.005
    assert a["inference_memory_bytes"] == a["inference_memory_vram_bytes"] == 4_683_087_332
    assert a["inference_warnings"] == "tokens/s 40.0 is outside the expected 8-12"
    warned = [e for e in result.of("log") if e["level"] == "warning"]
    assert [e["message"] for e in warned] == ["tokens/s 40.0 is outside the expected 8-12"]


def test_the_ranges_come_from_the_config(ollama, run_stage, config_file):
    config_file.write_text('[verify]\nregression = []\nexpect_tokens_per_s = "30-50"\nexpect_memory_gb = "4-8"\n')
    result = run_stage("verify", "--model", build(ollama, "big", size=9_100_000_000))
    assert result.rc == 0, result.stderr
    assert result.artifact["inference_warnings"] == "memory 9.1 GB is outside the expected 4-8 GB"
    tiny = run_stage("verify", "--model", build(ollama, "tiny", size=23_006_720))  # the demo's model
    assert "memory 0.023 GB is outside the expected 4-8 GB" in tiny.artifact["inference_warnings"]
    config_file.write_text('[verify]\nexpect_ttft_ms = "400-200"\n')
    bad = run_stage("verify", "--model", build(ollama, "other"))
    assert bad.rc == 2 and '\'verify.expect_ttft_ms\' must be a range "low-high" like "8-12"' in bad.stderr
