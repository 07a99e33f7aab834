"""The forgetting guard's prompt files and scoring: the shipped set, a user's own file, one-line errors,
and the comparison that blocks a build whose answers lost a required pattern."""

import pytest

from core.errors import StageError
from stages.ollama import regression
from stages.ollama.regression import Prompt, compare, load, score


def test_the_shipped_set_is_a_dozen_coding_and_web4_prompts(tmp_path):
    prompts = load(["default"], tmp_path)
    assert len(prompts) == 12 and len({p.name for p in prompts}) == 12
    assert sum(p.name.startswith("web4-") for p in prompts) == 4
    assert all(p.required for p in prompts)
    pdca = next(p for p in prompts if p.name == "web4-pdca")
    good = "# PDCA\n\n## Plan\n- a\n\n## Do\n- b\n\n## Check\n- c\n\n## Act\n- d\n"
    assert score(pdca, good)["score"] == 1.0
    assert score(pdca, good.replace("## Check", "Then we look"))["missing"] == ["(?im)^#+\\s*Check"]
    assert score(pdca, good + "<|im_end|>")["score"] == pytest.approx(4 / 5)


def test_a_user_file_adds_to_the_set(tmp_path):
    (tmp_path / "mine.toml").write_text('[[prompt]]\nname = "mine"\nprompt = "Say hi"\nrequired = ["(?i)hi"]\n')
    prompts = load(["default", "mine.toml"], tmp_path)
    assert prompts[-1] == Prompt("mine", "Say hi", ("(?i)hi",), ())
    assert load(["mine.toml"], tmp_path)[0].name == "mine" and load([], tmp_path) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[prompt]]\nname = "a"\nprompt = "p"\nrequired = ["("]\n', "prompt 1 (a): bad required pattern '('"),
        ('[[prompt]]\nname = "a"\nprompt = "p"\n', "prompt 1 (a): needs at least one required or forbidden pattern"),
        ('[[prompt]]\nname = "a"\nprompt = "p"\nrequire = ["x"]\n', "prompt 1: unknown keys"),
        ('[[prompt]]\nname = ""\nprompt = "p"\nrequired = ["x"]\n', "'name' and 'prompt' must be non-empty strings"),
        ('[[prompt]]\nname = "a"\nprompt = "p"\nforbidden = "x"\n', "(a): 'forbidden' must be a list of strings"),
        ('title = "x"\n', "expected [[prompt]] tables only"),
        ("[[prompt]\n", "not a readable TOML file"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(StageError) as caught:
        load(["bad.toml"], tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "bad.toml")) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_files_and_duplicate_names(tmp_path):
    with pytest.raises(StageError, match="nowhere.toml: regression prompt file not found"):
        load(["nowhere.toml"], tmp_path)
    with pytest.raises(StageError, match="the prompt name 'python-function' is used twice"):
        load(["default", "default"], tmp_path)


def results(**scores: float) -> dict:
    return {"score": sum(scores.values()) / len(scores), "prompts": {n: {"score": s} for n, s in scores.items()}}


def test_compare_blocks_a_drop_beyond_the_limit_and_names_the_prompts():
    old = results(a=1.0, b=1.0, c=1.0, d=1.0)
    assert compare(old, old, 0.05) == (False, [])  # an equal build passes
    blocked, worse = compare(results(a=1.0, b=0.5, c=0.75, d=1.0), old, 0.05)
    assert blocked and worse == ["b", "c"]  # worst first
    assert compare(results(a=1.0, b=1.0, c=1.0, d=0.8), old, 0.05) == (False, ["d"])  # 0.05 drop: at the limit
    assert compare(results(a=1.0, b=0.5, c=1.0, d=1.0), results(a=0.5, b=1.0, c=1.0, d=1.0), 0.0) == (False, ["b"])


def test_stored_scores_are_per_digest_and_prompt_set(tmp_path):
    store = regression.Store(tmp_path)
    assert store.get("sha256:abc", "k1") is None
    store.put("sha256:abc", "k1", {"score": 0.5, "prompts": {}})
    assert store.get("sha256:abc", "k1")["score"] == 0.5 and store.get("sha256:abc", "k2") is None
    prompts = load(["default"], tmp_path)
    assert regression.set_key(prompts, 512) != regression.set_key(prompts, 256) != regression.set_key(prompts[1:], 512)
