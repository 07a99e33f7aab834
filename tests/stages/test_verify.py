"""The verify stage: the broken-model checks on their own, then verify + promote + rollback against the
Ollama stand-in (streamed answers, the timing fields, latest moved only by a pass)."""

import json
import os
import subprocess
import sys

import pytest

pytest_plugins = ["ollama_fixtures"]
from stages.ollama.checks import problems, repetition

GOOD = (
    "# PDCA: component creation\n\n## Plan\n- Define the boundary.\n\n## Do\n```ts\nexport class Button {\n"
    "    render(): string {\n        if (this.enabled) {\n            return '<button/>';\n        }\n"
    "        return '';\n    }\n}\n```\n\n| step | state |\n|------|-------|\n| 1 | done |\n\n"
    "// ==========================================\n## Check\n- Tests green.\n\n## Act\n- Keep it.\n"
)


@pytest.mark.parametrize(
    "text,final,expect,problem",
    [
        (GOOD, {"done_reason": "stop", "eval_count": 90}, ["## Plan"], None),
        ("   \n", {"done_reason": "stop", "eval_count": 1}, [], "empty answer"),
        (GOOD, {"done_reason": "length", "eval_count": 100}, [], "ran into the token limit (100) without stopping"),
        (GOOD, {"eval_count": 100}, [], "ran into the token limit"),  # a server that sends no done_reason
        ("Plan: " + "G" * 60, {"done_reason": "stop"}, [], "degenerate repetition: 'GGGGGGGG"),
        ("Sure. " + "the plan " * 12, {"done_reason": "stop"}, [], "degenerate repetition: ' the plan the plan"),
        ("I will do it now.\n" * 4, {"done_reason": "stop"}, [], "degenerate repetition"),
        (GOOD + "<|im_start|>user\nmore", {"done_reason": "stop"}, [], "template tokens in the answer: <|im_start|>"),
        (GOOD + "<|endoftext|>", {"done_reason": "stop"}, [], "template tokens in the answer: <|endoftext|>"),
        (GOOD, {"done_reason": "stop"}, ["## Risks"], "expected text missing: '## Risks'"),
    ],
)
def test_each_broken_answer_is_caught_and_a_good_one_passes(text, final, expect, problem):
    found = problems(text, final, 100, expect)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(problem), found


def test_repetition_ignores_indentation_rules_and_banners():
    for text in (" " * 40 + "x", "|" + "------|" * 12, "#" * 79, "-" * 120, "0, 0, 1, 0, 0, 1", GOOD * 2):
        assert repetition(text) is None, text
    assert repetition(" " * 300) is not None  # but not without end


def preload(ollama, tag: str, behaviour: str | None = None) -> str:
    name = f"web4-agent:{tag}"
    ollama.add_model(
        name,
        system="You are the Web4 agent.",
        quantize="Q4_K_M",
        parameters={"temperature": 0.0, "stop": ["<|im_end|>", "<|endoftext|>"]},
    )
    if behaviour:
        ollama.behaviour[name] = behaviour
    return name


def test_a_good_build_passes_with_its_figures_and_becomes_latest(ollama, run_stage):
    build = preload(ollama, "build-1")
    ollama.first_token_delay = 0.2
    result = run_stage("verify", "--model", build, "--promote")
    assert result.rc == 0, result.stderr
    artifact = result.artifact
    assert artifact["type"] == "verified" and artifact["path"] == build
    assert artifact["passed"] is True and artifact["promoted"] is True and artifact["prompts"] == 1
    assert artifact["tokens_per_second"] == 40.0  # eval_count / eval_duration: 25 ms a token on the stand-in
    assert artifact["load_s"] == 1.5 and artifact["ttft_s"] >= 0.2
    metrics = result.of("metrics")[-1]
    assert metrics["prompt"] == 1 and metrics["tokens_per_second"] == 40.0
    report = json.loads(open(artifact["report"]).read())
    assert report["results"][0]["answer"].startswith("# PDCA: Create a PDCA for component creation")
    assert report["passed"] and report["results"][0]["problems"] == []
    request = next(g for g in ollama.generates if g["prompt"] == "Create a PDCA for component creation")
    assert request["prompt"] == "Create a PDCA for component creation" and request["keep_alive"] == "5m"
    assert request["options"] == {"num_predict": 2048}
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[build]["digest"]
    assert "web4-agent:previous" not in ollama.models
    # a second build: the first is kept as previous
    second = preload(ollama, "build-2")
    ollama.models[second]["digest"] = "2" * 64
    assert run_stage("verify", "--model", second, "--promote").rc == 0
    assert ollama.models["web4-agent:latest"]["digest"] == "2" * 64
    assert ollama.models["web4-agent:previous"]["digest"] == ollama.models[build]["digest"]
    # verifying the served build again keeps previous as it is
    again = run_stage("verify", "--model", second, "--promote")
    assert again.rc == 0 and any("already is" in e["message"] for e in again.of("log"))
    assert ollama.models["web4-agent:previous"]["digest"] == ollama.models[build]["digest"]


NO_DONE = "the stream ended without Ollama's final part: the server cut off a degenerate repetition"


@pytest.mark.parametrize(
    "behaviour,problem",
    [
        ("empty", "empty answer"),
        ("length", "ran into the token limit (2048) without stopping"),
        ("repeat", NO_DONE),  # llm/llama_server.go: tokenRepeat > 30 ends the stream with no done part
        ("newlines", NO_DONE),  # whitespace-only tokens are repeats too (compared after TrimSpace)
        (
            "leak",
            {
                "0.5.13": "template tokens in the answer: <|im_start|>, <|im_end|>",
                "0.33.0": "the answer makes up a next turn (a line 'assistant'): wrong or missing TEMPLATE",
            },
        ),
        ("normal", "expected text missing: '## Risks'"),
        (
            "the plan create for component the a of PDCA Web4 test. build check and act the do. plan a for the "
            "component of test the build. and a PDCA check the for of",
            "not an answer: word salad",
        ),
    ],
    ids=["empty", "length", "repeat", "newlines", "leak", "normal", "word salad"],
)
def test_a_broken_build_fails_and_latest_stays(ollama, run_stage, config_file, behaviour, problem):
    problem = problem[ollama.version] if isinstance(problem, dict) else problem
    good = preload(ollama, "good")
    assert run_stage("verify", "--model", good, "--promote").rc == 0
    bad = preload(ollama, "bad", behaviour)
    ollama.models[bad]["digest"] = "b" * 64
    config_file.write_text('[verify.expect]\n"Create a PDCA for component creation" = ["## Plan", "## Risks"]\n')
    result = run_stage("verify", "--model", bad, "--promote")
    assert result.rc == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad} failed verification: prompt 1: {problem}"), result.stderr
    assert "(latest was not touched)" in result.stderr and result.events[-1]["kind"] == "error"
    artifact = result.artifact
    assert artifact["passed"] is False and artifact["promoted"] is False and problem in artifact["failures"]
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[good]["digest"]
    assert "web4-agent:previous" not in ollama.models


def test_a_build_without_a_template_is_caught(ollama, run_stage):
    """Item 4: 0.30+ does not print special tokens, so a missing template shows as a made-up turn."""
    bare = "web4-agent:bare"
    ollama.add_model(bare, template="", parameters={})  # what Ollama does with a fine-tune's Jinja template
    result = run_stage("verify", "--model", bare, "--promote", "--num_predict", "200")
    answer = json.loads(open(result.artifact["report"]).read())["results"][0]["answer"]
    assert ("<|im_start|>" in answer) is not ollama.modern  # the runner passes no --special (0.30+)
    expected = "the answer makes up a next turn" if ollama.modern else "template tokens in the answer"
    assert result.rc == 1 and expected in result.stderr, result.stderr
    assert "web4-agent:latest" not in ollama.models


def test_an_answer_that_continues_the_prompt_is_caught(modern_ollama, run_stage):
    """Item 4: a fine-tune fed the bare prompt goes on with the prompt's sentence."""
    build = preload(modern_ollama, "cont", " for the new Web4 component, step by step.\n\n1. Plan it.\n")
    result = run_stage("verify", "--model", build)
    assert result.rc == 1 and "the answer continues the prompt ('for the new Web4 component" in result.stderr


def test_verify_without_promote_and_its_errors(ollama, run_stage, config_file):
    build = preload(ollama, "b1")
    result = run_stage("verify", "--model", build, "--prompt", "Write a component", "--expect", "PDCA")
    assert result.rc == 0 and result.artifact["promoted"] is False and "web4-agent:latest" not in ollama.models
    assert any(g.get("prompt") == "Write a component" for g in ollama.generates)
    missing = run_stage("verify", "--model", "web4-agent:nope")
    assert missing.rc == 1 and "model 'web4-agent:nope' not found" in missing.stderr
    config_file.write_text('[verify.expect]\n"Create a PDCA" = ["x"]\n')
    typo = run_stage("verify", "--model", build)
    assert typo.rc in (1, 2)  # a config mistake: 2 (README) once issue 9's stage exit codes are in
    assert "[verify.expect] names a prompt that is not in [verify] prompts: 'Create a PDCA'" in typo.stderr


def w4tui(*args):
    return subprocess.run([sys.executable, "-m", "w4tui", *args], capture_output=True, text=True, env=dict(os.environ))


def test_stage_promotes_and_cli_rolls_back(tmp_path, ollama):
    first, second = preload(ollama, "build-1"), preload(ollama, "build-2")
    ollama.models[second]["digest"] = "2" * 64
    for build in (first, second):
        proc = subprocess.run(
            [sys.executable, "-m", "stages.verify", "--model", build, "--promote"],
            capture_output=True,
            text=True,
            env={**os.environ, "W4TUI_EVENTS": str(tmp_path / "e.jsonl")},
        )
        assert proc.returncode == 0, proc.stderr
    assert ollama.models["web4-agent:latest"]["digest"] == "2" * 64
    proc = w4tui("rollback")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "web4-agent:latest rolled back to web4-agent:previous (web4-agent:build-1); it was web4-agent:build-2"
    )
    assert ollama.models["web4-agent:latest"]["digest"] == ollama.models[first]["digest"]
    again = w4tui("rollback")
    assert again.returncode == 1 and "web4-agent:latest already is web4-agent:previous" in again.stderr


def test_prompt_rate_is_given_only_without_a_prompt_cache(modern_ollama, run_stage, config_file):
    """Item 6: prompt_eval_count includes cached tokens; prompt_eval_duration covers only the new ones
    (llm/llama_server.go promptEvalCount = cache_n + prompt_n)."""
    build = preload(modern_ollama, "cache")
    config_file.write_text(
        '[verify]\nprompts = ["Create a PDCA for component creation", '
        '"Create a PDCA for component creation in TypeScript"]\n'
    )
    result = run_stage("verify", "--model", build)
    assert result.rc == 0, result.stderr
    first, second = json.loads(open(result.artifact["report"]).read())["results"]
    assert first["prompt_tokens_per_s"] == 500.0 and first["prompt_cache"] == "none (fresh load)"
    assert second["prompt_eval_count"] == 28 and second["prompt_tokens_per_s"] is None  # 26 of 28 were cached
    assert second["prompt_cache"].startswith("possible")


@pytest.mark.parametrize(
    "name,problem",
    [
        ("my.team/web4-agent:b1", "the namespace 'my.team' contains '.'"),
        ("web4-agent:" + "b" * 81, "the tag is 81 characters long"),
    ],
)
def test_a_model_name_the_server_would_refuse_is_a_usage_error(ollama, run_stage, name, problem):
    """Item 7: names checked as types/model/name.go checks them, before any request."""
    result = run_stage("verify", "--model", name)
    assert result.rc == 2 and problem in result.stderr and not ollama.generates
