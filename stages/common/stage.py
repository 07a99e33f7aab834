"""What every stage's ``main(argv)`` shares: its config and its entry (its parser is core/parsers.py's).

A stage raises ``StageError`` for anything a person can fix (bad input, missing file, no disk space);
core/program.py turns it into one ``error`` event and one line on stderr, never a traceback. Anything
else is a bug: the traceback goes to the log and the error event points there.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from core.config import Config, load_config
from core.events import EventWriter
from core.pipes import tolerate_closed_stdout
from core.program import run_program, start_fields


def stage_config() -> Config:
    """The config the runner chose (W4TUI_CONFIG), else the embedded default."""
    return load_config(None)


def run_stage(name: str, body: Callable[[EventWriter], dict | None], events: EventWriter | None = None) -> int:
    """Run ``body(events)`` as a stage: core/program.py's entry (start event, the final event, the exit
    code), with the stage's logging. ``body`` returns the summary fields of the ``done`` event."""
    tolerate_closed_stdout()  # before logging holds sys.stdout: `... | head` must not fail the log lines
    # Log lines go to stdout, so stderr carries only the one-line error a person must read.
    logging.basicConfig(
        level=os.environ.get("W4TUI_LOG_LEVEL", "INFO"),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpx2", "httpcore", "urllib3", "filelock"):  # one line per HTTP request is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    log = logging.getLogger(f"stages.{name}")

    def logged(events: EventWriter) -> dict | None:
        log.info("%s started: %s", name, " ".join(sys.argv[1:]))
        summary = body(events)
        log.info("%s succeeded", name)
        return summary

    return run_program(name, logged, events or EventWriter.from_env(name), start_fields)


def run_main(
    name: str,
    parser: Callable[[], argparse.ArgumentParser],
    body: Callable[[argparse.Namespace, EventWriter], dict | None],
    argv: Sequence[str] | None,
    events: EventWriter | None = None,
) -> int:
    """A stage's ``main(argv)``: build the parser (a function, since defaults read the config: no I/O at
    import), parse inside the run so bad flags become an error event too, then run ``body``."""

    def run(events: EventWriter) -> dict | None:
        return body(parser().parse_args(argv), events)

    return run_stage(name, run, events)
