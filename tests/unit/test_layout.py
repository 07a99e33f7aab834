"""stages/ shows the programs at its top, each with a visible ``main(argv=None)``; libraries live below."""

from __future__ import annotations

import ast
from pathlib import Path

STAGES = Path(__file__).resolve().parents[2] / "stages"
PROGRAMS = {"download", "train_lora", "merge_lora", "convert_gguf", "quantize", "deploy_ollama", "verify"}
OPTIONAL = {"evaluate"}  # the evaluation stage, where it exists


def test_the_top_of_stages_holds_only_the_programs():
    top = {p.stem for p in STAGES.glob("*.py")} - {"__init__"}
    assert PROGRAMS <= top and top - PROGRAMS <= OPTIONAL, sorted(top)


def test_each_program_defines_main_with_an_optional_argv():
    for name in PROGRAMS:
        tree = ast.parse((STAGES / f"{name}.py").read_text())
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains, f"stages/{name}.py has no def main(argv=None)"
        args = mains[0].args
        assert [a.arg for a in args.args] == ["argv"] and len(args.defaults) == 1, name


def test_library_code_imports_the_errors_module_not_the_stage_glue():
    for path in STAGES.rglob("*.py"):
        if path.parent == STAGES or path.parent.name == "common":
            continue
        assert "stages.common.stage import" not in path.read_text().replace("stage_config", ""), path
