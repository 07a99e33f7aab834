"""Run a stage and SIGKILL it at a chosen event: a kill -9 at a known point instead of a timing race.

    python tests/hostile/killer.py progress:3 stages.convert_gguf --model ... --output ...
    python tests/hostile/killer.py artifact:checkpoint stages.train_lora ...

``KIND:N`` kills right after the N-th event of that kind has been written; ``artifact:TYPE`` after the
first artifact event of that type. The process dies as it would from ``kill -9``: no cleanup runs.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, as with python -m

from core.events import EventWriter  # noqa: E402

kind, _, what = sys.argv[1].partition(":")
module, args = sys.argv[2], sys.argv[3:]
seen = 0
emit = EventWriter.emit


def emit_then_die(self, event_kind, **fields):
    global seen
    event = emit(self, event_kind, **fields)
    if event_kind == kind:
        seen += 1
        if (what.isdigit() and seen >= int(what)) or (not what.isdigit() and fields.get("type") == what):
            os.kill(os.getpid(), signal.SIGKILL)
    return event


EventWriter.emit = emit_then_die
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
