"""The TUI process never imports torch, transformers or peft; the stages never import Textual.

Each check runs in a fresh interpreter, so what another test imported cannot hide a leak."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tui_helpers import ROOT

HEAVY = ("torch", "transformers", "peft")


def _run(code: str, tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TZ": "UTC",
            "OLLAMA_HOST": "http://127.0.0.1:9",
            "PYTHONPATH": str(ROOT),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_tui_never_imports_torch_transformers_or_peft(tmp_path):
    """Import every module of w4tui.ui, then run the app through all six panes (its workers import
    what they need lazily: the Ollama client, the GGUF reader), and look at sys.modules."""
    import tui_workspace

    (tmp_path / "config.toml").write_text('[paths]\noutputs = "out"\nruns = "runs"\nstate = "state"\n')
    (tmp_path / "out" / "gguf").mkdir(parents=True)
    tui_workspace._gguf(tmp_path / "out" / "gguf" / "x-f16.gguf")  # so the artifacts pane reads a header
    found = _run(
        f"""
        import asyncio, importlib, json, pkgutil, sys
        import w4tui.ui, w4tui.runs.pipeline_job
        for m in pkgutil.walk_packages(w4tui.ui.__path__, "w4tui.ui."):
            importlib.import_module(m.name)
        from core.config import load_config
        from w4tui.ui.app import W4App

        async def main():
            app = W4App(load_config({str(tmp_path / "config.toml")!r}))
            async with app.run_test(size=(120, 40)) as pilot:
                for key in "123456":
                    await pilot.press(key)
                    await pilot.pause(0.2)
                await app.workers.wait_for_complete()
        asyncio.run(main())
        print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules],
                          "lazy": [m for m in ("ollama", "httpx", "core.gguf_header") if m in sys.modules]}}))
    """,
        tmp_path,
    )
    assert found["heavy"] == []
    assert set(found["lazy"]) == {"ollama", "httpx", "core.gguf_header"}  # the workers did run


def test_the_app_module_imports_nothing_heavy_at_import_time(tmp_path):
    found = _run(
        """
        import json, sys
        import w4tui.ui.app
        print(json.dumps([m for m in ("torch", "transformers", "peft", "numpy", "gguf", "ollama", "httpx")
                          if m in sys.modules]))
    """,
        tmp_path,
    )
    assert found == []  # gguf/numpy/ollama/httpx are for workers: the first frame must not wait for them


def test_no_stage_imports_textual_or_the_ui(tmp_path):
    found = _run(
        """
        import importlib, json, pkgutil, sys
        import stages
        names = [m.name for m in pkgutil.walk_packages(stages.__path__, "stages.")]
        for name in names:
            importlib.import_module(name)
        print(json.dumps({"modules": names,
                          "ui": [m for m in sys.modules if m == "textual" or m.startswith(("textual.", "w4tui.ui"))]}))
    """,
        tmp_path,
    )
    assert found["ui"] == []
    assert {"stages.train_lora", "stages.merge_lora", "stages.convert_gguf", "stages.download"} <= set(found["modules"])


def test_core_imports_neither_side_nor_anything_heavy(tmp_path):
    """core/ is what both processes import: it must stay free of Textual, torch and both sides."""
    found = _run(
        """
        import importlib, json, pkgutil, sys
        import core
        names = [m.name for m in pkgutil.walk_packages(core.__path__, "core.")]
        for name in names:
            importlib.import_module(name)
        bad = ("textual", "torch", "transformers", "peft", "w4tui", "stages")
        print(json.dumps({"modules": names,
                          "found": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in bad})}))
    """,
        tmp_path,
    )
    assert found["found"] == []
    assert {"core.config", "core.events", "core.ollama.client", "core.specs"} <= set(found["modules"])
