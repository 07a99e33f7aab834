"""The forgetting guard in verify, against the Ollama stand-in: every build's answers to the regression
prompts are scored and compared with latest's; --promote refuses a build that lost a required pattern,
naming the prompt, and lets an equal one through."""

import json

pytest_plugins = ["ollama_fixtures"]

GUARD = """
[[prompt]]
name = "pdca"
prompt = "Plan a release"
required = ['(?m)^## Plan', '(?m)^## Act']

[[prompt]]
name = "javascript"
prompt = "Debounce in JavaScript"
required = ['setTimeout']
forbidden = ['<\\|im_end\\|>']

[[prompt]]
name = "sql"
prompt = "Top customers in SQL"
required = ['(?i)\\bselect\\b']
"""
GOOD = (
    "# PDCA: the release\n\n## Plan\n- Define the scope of the release.\n\n## Do\n- Wrap the handler: "
    "`setTimeout(run, 300)` delays it.\n- Query the totals with `SELECT name FROM customers`.\n\n"
    "## Check\n- The tests are green.\n\n## Act\n- Keep what worked.\n"
)
FORGOT_JS = GOOD.replace("`setTimeout(run, 300)` delays it", "a timer delays it")


def build(ollama, tag: str, answer: str) -> str:
    name = f"web4-agent:{tag}"
    ollama.add_model(name, parameters={"temperature": 0.0, "stop": ["<|im_end|>"]})
    ollama.models[name]["digest"] = tag[-1] * 64
    ollama.behaviour[name] = answer
    return name


def test_the_guard_blocks_a_build_that_forgot_and_lets_an_equal_one_through(ollama, run_stage, config_file):
    (config_file.parent / "guard.toml").write_text(GUARD)
    config_file.write_text('[verify]\nregression = ["guard.toml"]\nmax_regression = 0.05\n')
    first = run_stage("verify", "--model", build(ollama, "build-1", GOOD), "--promote")
    assert first.rc == 0, first.stderr
    assert first.artifact["regression_score"] == 1.0 and "regression_latest_score" not in first.artifact
    assert any("regression score 1.000 on 3 prompts (no latest" in e["message"] for e in first.of("log"))

    equal = run_stage("verify", "--model", build(ollama, "build-2", GOOD), "--promote")
    assert equal.rc == 0, equal.stderr
    assert equal.artifact["promoted"] is True and equal.artifact["regression_latest_score"] == 1.0
    assert ollama.models["web4-agent:latest"]["digest"] == "2" * 64
    # latest's answers were scored when it was verified: kept by digest, not asked again
    assert not [g for g in ollama.generates if g["model"] == "web4-agent:latest"]
    assert (config_file.parent / "state" / "regression").is_dir()

    forgot = build(ollama, "build-3", FORGOT_JS)
    blocked = run_stage("verify", "--model", forgot, "--promote")
    assert blocked.rc == 1 and "Traceback" not in blocked.stderr
    assert blocked.stderr.strip() == (
        f"error: {forgot} failed verification: forgetting guard: regression score 0.833 is more than 0.05 below "
        "web4-agent:latest's 1.000; worse: javascript (latest was not touched)"
    )
    assert blocked.artifact["regression_blocked"] is True and blocked.artifact["regression_worse"] == "javascript"
    scores = dict(part.split("=") for part in blocked.artifact["regression_prompts"].split(";"))
    assert len(scores) == 3 and float(scores["javascript"]) < 1.0 == max(float(s) for s in scores.values())
    assert ollama.models["web4-agent:latest"]["digest"] == "2" * 64

    # without --promote the score is reported, nothing is refused
    report_only = run_stage("verify", "--model", forgot)
    assert report_only.rc == 0 and report_only.artifact["regression_score"] == 0.833333
    assert report_only.artifact["regression_worse"] == "javascript"


def test_the_shipped_set_runs_by_default_and_an_empty_list_turns_it_off(ollama, run_stage, config_file):
    model = build(ollama, "build-1", GOOD)
    result = run_stage("verify", "--model", model)
    assert result.rc == 0, result.stderr
    asked = [g["prompt"] for g in ollama.generates if g["model"] == model]
    assert len(asked) == 1 + 12 and asked[-1].startswith("Write the TypeScript interface for the Registry")
    assert all(g["options"] == {"num_predict": 512} for g in ollama.generates[1:])  # regression_num_predict
    assert 0 < result.artifact["regression_score"] < 1
    progress = [e for e in result.of("progress") if e["unit"] == "regression prompts"]
    assert progress[-1]["message"] == f"{model}: web4-interface"
    config_file.write_text("[verify]\nregression = []\n")
    ollama.generates.clear()
    off = run_stage("verify", "--model", build(ollama, "build-2", GOOD))
    assert off.rc == 0 and "regression_score" not in off.artifact and len(ollama.generates) == 1


def test_a_bad_regression_file_is_one_line(ollama, run_stage, config_file):
    (config_file.parent / "mine.toml").write_text('[[prompt]]\nname = "x"\nprompt = "p"\nrequired = ["("]\n')
    config_file.write_text('[verify]\nregression = ["default", "mine.toml"]\n')
    result = run_stage("verify", "--model", build(ollama, "build-1", GOOD))
    assert result.rc == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{config_file.parent / 'mine.toml'}: prompt 1 (x): bad required pattern '('" in result.stderr
    assert json.dumps(result.events[-1]).count("error") >= 1
