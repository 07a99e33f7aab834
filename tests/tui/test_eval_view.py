"""The eval table of a build in the Artifacts pane's inspect view: read from <build>-eval.json by the
scan (a worker), shown for the F16 and every quantized GGUF of the build, with the size/quality bars."""

from __future__ import annotations

import json

import tui_workspace as ws
from tui_helpers import recorded, utc  # noqa: F401

from w4tui.ui.screens.inspect import describe_artifact
from w4tui.ui.sources.artifacts import ArtifactScanner

DOC = {
    "version": 1,
    "build": ws.OLD,
    "seconds": 141.0,
    "data": {"source": "eval split of the adapter (12 samples)", "scored_tokens": 1248},
    "rows": [
        {"name": "transformers", "kind": "transformers", "ppl": 6164.1091, "seconds": 6.1},
        {
            "name": "F16",
            "kind": "gguf",
            "reference": True,
            "bytes": 45_000_000,
            "ppl": 6163.8825,
            "kl_mean": 0.0,
            "kl_p99": 0.0,
            "top1": 1.0,
            "prompt_tps": 11672.3,
            "gen_tps": 613.7,
            "seconds": 20.0,
        },
        {
            "name": "Q4_K_M",
            "kind": "gguf",
            "bytes": 23_000_000,
            "ppl": 6205.8739,
            "kl_mean": 0.00465,
            "kl_p99": 0.04369,
            "top1": 0.949,
            "prompt_tps": 403.7,
            "gen_tps": 126.1,
            "seconds": 28.9,
        },
    ],
}


def test_the_inspect_view_shows_the_build_s_eval_table_and_bars(recorded):
    gguf = recorded.paths.outputs / "gguf"
    (gguf / f"{ws.OLD}-eval.json").write_text(json.dumps(DOC))
    scanner = ArtifactScanner(recorded)
    f16 = next(a for a in scanner.scan([]) if a.name == f"{ws.OLD}-f16.gguf")
    text = describe_artifact(f16, ws.NOW)
    assert "eval of the build (e runs it again)" in text
    assert "Q4_K_M         23.0 MB   6205.8739   +0.68%   0.00465   0.04369   94.9%" in text
    assert "Q4_K_M   size ██████████·········· " in text and "KL ████████████████████ 0.00465" in text
    assert "1248 scored tokens of eval split of the adapter (12 samples); 141 s in all" in text
    # another build's GGUF has no table; a broken file is no table, not an error
    (gguf / f"{ws.OLD}-eval.json").write_text("{broken")
    assert not next(a for a in scanner.scan([]) if a.name == f"{ws.OLD}-f16.gguf").eval
