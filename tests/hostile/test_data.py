"""Bad training data: one line naming the file (and line) before any model loads, nothing written."""

from __future__ import annotations

import os

import pytest
from conftest import assert_one_line, listing

GOOD = '{"prompt": "Say hi", "completion": " hi"}\n'
BAD = {  # dataset (a dict is a directory of files) -> what the line must name
    "a dangling symlink in the directory": ({"a.jsonl": GOOD, "b.jsonl": "->gone.jsonl"}, "b.jsonl: unreadable"),
    "a directory named .jsonl": ({"a.jsonl": GOOD, "c.jsonl/": ""}, "c.jsonl: not a regular file"),
    "a line that is not JSON": ({"a.jsonl": GOOD + "{oops\n"}, "a.jsonl:2: not valid JSON"),
    "a line nested too deep": ({"a.jsonl": GOOD + "[" * 100_000 + "\n"}, "a.jsonl:2:"),
    "not UTF-8": ({"a.jsonl": GOOD + '{"text": "\xff"}\n'}, "a.jsonl:2: not valid UTF-8"),
    "a JSON list, not an object": ({"a.jsonl": "[1, 2]\n"}, "a.jsonl:1: expected a JSON object"),
    "an unknown shape": ({"a.jsonl": '{"question": "?"}\n'}, "a.jsonl:1:"),
    "empty": ({"a.jsonl": ""}, "a.jsonl: no usable samples"),
    "no .jsonl in the directory": ({"a.json": GOOD}, "no .jsonl files"),
}


def write(root, files: dict) -> None:
    root.mkdir()
    for name, text in files.items():
        if name.endswith("/"):
            (root / name).mkdir()
        elif text.startswith("->"):
            os.symlink(root / text[2:], root / name)
        else:
            (root / name).write_bytes(text.encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff"))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_named_before_any_training(workspace, stage, tiny_model, case):
    files, named = BAD[case]
    write(workspace / "data", files)
    before = listing(workspace)
    result = stage(
        "train_lora",
        "--base_model",
        tiny_model,
        "--dataset",
        "data",
        "--output",
        "outputs/adapters/x",
        "--device",
        "cpu",
        "--no-cache",
    )
    assert_one_line(result, 1, named)
    assert listing(workspace) == before
