"""The not-an-answer check on both sides: real answers (a Markdown PDCA plan, Python, a shell snippet,
TypeScript, prose, German, the stand-in's answer) never trip it; random Qwen2.5 vocabulary (decoded with
the real tokenizer), shuffled words and repeated fragments do (issue 9 item 2)."""

import pytest
from answer_samples import (
    GOOD,
    PDCA_PLAN,
    PROSE,
    random_tokens,
    repeated_fragments,
    shuffled_lines,
    shuffled_words,
)
from ollama_behaviour import pdca

from stages.ollama.checks import problems
from stages.ollama.salad import not_an_answer

TRICKY = (  # real text that bends the prose rules: abbreviations, code words, a lowercase list, a table
    "Use a `for` loop, e.g. over `items`, and keep the state in a dict, i.e. one entry per id.\n"
    "Plan - Do - Check - Act is one cycle; option A. is the default.\n\n"
    "- run `pytest -q`\n- then `ruff check .`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "See https://ollama.com/library/qwen2.5-coder and the file `config.toml`. Then restart it."
)


@pytest.mark.parametrize("name", [*GOOD, "tricky", "stand-in answer"])
def test_real_answers_pass(name):
    text = {"tricky": TRICKY, "stand-in answer": pdca("Create a PDCA for component creation")}.get(name) or GOOD[name]
    assert not_an_answer(text) is None
    assert problems(text, {"done_reason": "stop", "done": True, "eval_count": 50}, 2048) == []


@pytest.mark.parametrize("seed", range(6))
def test_random_vocabulary_is_caught(seed):
    text = random_tokens(seed, n=120, ascii_only=seed % 2 == 0)  # half of them English-looking fragments only
    assert not_an_answer(text).startswith("random tokens"), text[:200]


@pytest.mark.parametrize("seed", range(3))
def test_repeated_fragments_are_caught(seed):
    assert not_an_answer(repeated_fragments(seed)).startswith("repeated fragments")


@pytest.mark.parametrize("shuffle", [shuffled_words, shuffled_lines])
@pytest.mark.parametrize("text", [PDCA_PLAN, PROSE], ids=["pdca plan", "prose"])
def test_shuffled_prose_is_caught_nearly_always(text, shuffle):
    caught = [not_an_answer(shuffle(text, seed)) for seed in range(30)]
    assert sum(c is not None for c in caught) >= 27, caught  # measured: 29 or 30 of 30
    assert all(c.startswith("word salad") for c in caught if c)


def test_an_answer_check_failure_reads_as_one_line():
    found = problems(shuffled_words(PDCA_PLAN, 0), {"done_reason": "stop", "done": True}, 2048)
    assert found == [f"not an answer: {not_an_answer(shuffled_words(PDCA_PLAN, 0))}"]
    assert problems(shuffled_words(PDCA_PLAN, 0), {"done": True}, 2048, answer_check=False) == []
