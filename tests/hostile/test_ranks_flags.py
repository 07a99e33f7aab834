"""Bad --gpus / multi-node flags: one line naming the flag, exit 2, before torchrun or torch starts
and before anything is written."""

from __future__ import annotations

import pytest
from conftest import assert_one_line, listing

CASES = {
    "no ranks": (["--gpus", "0"], "--gpus must be greater than 0"),
    "a node beyond the group": (["--gpus", "2", "--nnodes", "2", "--node_rank", "2"], "--node_rank must be from 0"),
    "several nodes, no rendezvous": (["--gpus", "2", "--nnodes", "2"], "--nnodes above 1 needs --rdzv_endpoint"),
    "not a number": (["--gpus", "eight"], "--gpus: invalid int value"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_rank_flags_are_named_before_anything_starts(workspace, stage, tiny_model, case):
    flags, named = CASES[case]
    (workspace / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    before = listing(workspace)
    result = stage(
        "train_lora",
        "--base_model",
        tiny_model,
        "--dataset",
        "data.jsonl",
        "--output",
        "outputs/adapters/x",
        "--device",
        "cpu",
        *flags,
    )
    assert_one_line(result, 2, named)
    assert listing(workspace) == before
