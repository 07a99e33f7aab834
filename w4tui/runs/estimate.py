"""`w4tui run train --eta`: the measured ETA first, then the training only if the person says so.

The estimate is a run of its own (``stages.train_lora ... --eta``: the rate of the last run with the
same settings on this machine, else a few calibration steps on the real model), followed like any run;
it trains nothing. Then, on a terminal, one question; without one, the estimate is all that happens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from core.errors import EXIT_BY_STATUS, EXIT_USAGE
from core.names import EventKind, RunStatus
from w4tui.runs.follow import follow
from w4tui.runs.runner import Runner
from w4tui.runs.start import checked_start

EXIT_DECLINED = 0  # not starting is what was asked for: no error


def eta_first(
    runner: Runner,
    stage: str,
    extra: list[str],
    ask: Callable[[str], str] | None = None,
    out=sys.stdout,
    no_defaults: bool = False,
) -> int | None:
    """None when the training should start now; else the exit code to end with."""
    if stage != "train":
        print(f"error: --eta is for the train stage, not {stage}", file=sys.stderr)
        return EXIT_USAGE
    asked = [*extra, "--eta"]
    inv = runner.invocation("train", args=asked) if no_defaults else runner.invocation("train", asked)
    run = checked_start(runner, inv)
    print(f"estimating: run {run.id}", file=out, flush=True)
    status = follow(runner, run, out)
    done = next((e for e in reversed(runner.get(run.id).events()) if e.get("kind") == EventKind.DONE), {})
    if status != RunStatus.SUCCEEDED or not done.get("eta_text"):
        error = runner.get(run.id).error()
        print(f"no estimate: {error.get('message') if error else status}", file=sys.stderr)
        return EXIT_BY_STATUS.get(status, 1) or 1
    print(f"ETA: {done['eta_text']}", file=out, flush=True)
    if ask is None:
        if not (sys.stdin.isatty() and out.isatty()):
            return EXIT_DECLINED  # nobody to ask: the estimate was the job
        ask = input
    answer = ask("start the training now? [y/N] ").strip().lower()
    return None if answer in ("y", "yes") else EXIT_DECLINED
