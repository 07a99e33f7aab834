"""Two builds side by side: what the compare view (m marks a build, c compares the selected one with it)
reads from the builds' records and shows, differing rows marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_helpers import anyio_backend, make_app, notifications, recorded, settle, until, utc  # noqa: F401

from w4tui.ui.sources.artifacts import Artifact
from w4tui.ui.sources.compare import build_facts, compare_text
from w4tui.ui.widgets.dialogs import TextViewScreen


def adapter(tmp_path, name: str, lr: float, eval_loss: float, data_sha: str) -> str:
    path = tmp_path / "adapters" / name
    path.mkdir(parents=True)
    (path / "training_run.json").write_text(
        json.dumps(
            {
                "args": {"learning_rate": lr, "lora_r": 16, "epochs": 1, "profile": "full"},
                "data": {"/data/incremental_2026-11-30.jsonl": data_sha},
                "final_loss": 0.9,
                "eval_loss": eval_loss,
                "main_eval_loss": 1.2,
                "train_samples": 40,
                "eval_samples": 4,
            }
        )
    )
    return str(path)


def test_two_builds_side_by_side(tmp_path):
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "b1-eval.json").write_text(
        json.dumps(
            {
                "version": 1,
                "rows": [
                    {"name": "F16", "kind": "gguf", "ppl": 5.1234, "kl_mean": 0.0},
                    {"name": "Q4_K_M", "kind": "gguf", "ppl": 5.2001, "kl_mean": 0.0123},
                ],
            }
        )
    )
    one = Artifact(
        "gguf",
        str(gguf / "b1-Q4_K_M.gguf"),
        "b1-Q4_K_M.gguf",
        10,
        0.0,
        quant="Q4_K_M",
        extra=(("adapter", adapter(tmp_path, "b1", 2e-4, 1.05, "a" * 64)),),
        verify=(
            ("regression_score", "1.0"),
            ("regression_prompts", "python=1.00;javascript=1.00"),
            ("inference_tokens_per_s", "10.5"),
            ("run", "x"),
        ),
    )
    two = Artifact(
        "gguf",
        str(gguf / "b2-Q4_K_M.gguf"),
        "b2-Q4_K_M.gguf",
        10,
        0.0,
        quant="Q4_K_M",
        extra=(("adapter", adapter(tmp_path, "b2", 1e-4, 1.10, "b" * 64)),),
        verify=(
            ("regression_score", "0.833333"),
            ("regression_worse", "javascript"),
            ("regression_prompts", "python=1.00;javascript=0.67"),
        ),
    )
    left, right = build_facts(one, [one, two]), build_facts(two, [one, two])
    assert left["learning_rate"] == "0.0002" and right["learning_rate"] == "0.0001"
    assert left["eval Q4_K_M"] == "ppl 5.2001, KL 0.01230" and "eval Q4_K_M" not in right  # b2 has no eval yet
    assert left["data incremental_2026-11-30.jsonl"] == "a" * 12 and "run" not in left
    lines = compare_text(left, right).splitlines()
    assert lines[0].split() == ["b1-Q4_K_M.gguf", "b2-Q4_K_M.gguf"]
    row = {line[2:26].strip(): line for line in lines[1:]}
    assert row["lora_r"].startswith(" ") and row["eval_loss"].startswith("≠")  # same / differs
    assert (
        row["regression_score"].split()[-2:] == ["1.0", "0.833333"]
        and row["regression_worse"].split()[-1] == "javascript"
    )
    assert row["main_eval_loss"].split()[-2:] == ["1.2000", "1.2000"]
    # the regression score per prompt, one row each: the prompt that got worse is marked
    assert row["regression javascript"].startswith("≠") and row["regression javascript"].split()[-2:] == [
        "1.00",
        "0.67",
    ]
    assert row["regression python"].startswith(" ")


def test_a_quantized_build_finds_its_adapter_through_its_f16_parent(tmp_path):
    from w4tui.ui.sources.compare import adapter_of

    f16 = Artifact("gguf", "/o/b-f16.gguf", "b-f16.gguf", 1, 0.0, extra=(("adapter", "/o/adapters/b"),))
    quant = Artifact("gguf", "/o/b-Q4_K_M.gguf", "b-Q4_K_M.gguf", 1, 0.0, parent=f16.path)
    orphan = Artifact("gguf", "/o/c-Q4_K_M.gguf", "c-Q4_K_M.gguf", 1, 0.0, parent="/gone/c-f16.gguf")
    assert adapter_of(quant, [f16, quant, orphan]) == "/o/adapters/b" and adapter_of(orphan, [f16, orphan]) is None


@pytest.mark.anyio
async def test_mark_one_pick_another_and_compare(recorded, anyio_backend):
    app = make_app(recorded)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("c")
        assert any("mark a build first (m)" in n for n in notifications(app))
        await pilot.press("ctrl+home", "m")
        marked = app.screen.query_one("#artifacts").marked
        await pilot.press("ctrl+end", "c")
        await until(pilot, lambda: isinstance(app.screen, TextViewScreen), what="the compare view")
        assert app.screen.title_text.startswith(f"compare {marked.name} | ")
        assert app.screen.text.splitlines()[1].startswith("≠ kind")


def test_the_compare_view_says_which_trainer_and_base_precision_made_each_build(tmp_path):
    torch_run = adapter(tmp_path, "night-torch", 1e-4, 1.1, "a" * 64)  # a record from before the mlx backend
    mlx_run = adapter(tmp_path, "night-mlx", 1e-4, 1.1, "a" * 64)
    record = json.loads((Path(mlx_run) / "training_run.json").read_text())
    record.update(backend="mlx", base_precision="4-bit", base_dtype="4-bit")
    (Path(mlx_run) / "training_run.json").write_text(json.dumps(record))
    one, two = (Artifact("adapter", p, Path(p).name, 1, 0.0) for p in (torch_run, mlx_run))
    assert build_facts(one, [one, two])["trained by"] == "torch"
    assert build_facts(two, [one, two])["trained by"] == "mlx, 4-bit base"
