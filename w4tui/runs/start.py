"""Starting a stage call as every front end does: pre-flight first (disk, memory, a second training,
battery: w4tui/monitors/preflight.py), then Ollama's models unloaded when a training needs their memory,
then the run, with pre-flight's warnings in its events. The CLI, the TUI's start form and the pipeline
(so the night and `w4tui adapter build` too) start stages through this; the runner starts what it is given.
"""

from __future__ import annotations

from core.config import Config
from core.ollama.client import OllamaError, unload_all
from core.specs import Invocation
from w4tui.monitors import preflight
from w4tui.runs.runner import Run, Runner


def checked_start(runner: Runner, inv: Invocation, *, force: bool = False) -> Run:
    """Start ``inv`` unless pre-flight refuses it (RunError with the figures); ``force`` skips pre-flight."""
    warnings = [] if force else preflight.check(runner.config, inv)
    if inv.spec.name == "train" and inv.args is not None and not preflight.ollama_can_stay(runner.config, inv):
        free_memory_for_training(runner.config)
    run = runner.start(inv)
    preflight.record(run, warnings)
    return run


def free_memory_for_training(config: Config) -> None:
    """A 7B model loaded in Ollama holds GBs the training needs on a 32 GB Mac: unload it first."""
    try:
        unload_all(config)
    except OllamaError:
        pass  # a server that cannot unload is no reason not to train
