"""What every stage's ``main(argv)`` shares: its argument parser, its config, and its entry.

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
from core.errors import UsageError
from core.events import EventWriter
from core.pipes import tolerate_closed_stdout
from core.program import run_program, start_fields


class StageArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UsageError (one line, exit 2) instead of exiting, and takes
    each long flag in both spellings: ``--base_model`` (the one the help shows) or ``--base-model``."""

    def __init__(self, *args, **kwargs) -> None:
        self._flags: set[str] = set()  # before argparse adds --help through add_argument
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs) -> argparse.Action:
        # Declared either way, shown snake_case: one style per program, the one the seed's users type.
        action = super().add_argument(*dict.fromkeys(map(snake_flag, names)), **kwargs)
        self._flags.update(action.option_strings)
        return action

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._snake_args(args), namespace)

    def _snake_args(self, args: list[str]) -> list[str]:
        out = []
        for i, arg in enumerate(args):
            if arg == "--":  # what follows is not flags
                return out + args[i:]
            flag, eq, value = arg.partition("=")
            snake = snake_flag(flag)
            # --base-model, or an abbreviation of it (--base-m); an unknown flag stays as typed for its error
            if flag not in self._flags and any(known.startswith(snake) for known in self._flags):
                arg = snake + eq + value
            out.append(arg)
        return out

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", hint=f"see: python -m stages.{self.prog} --help")


def snake_flag(name: str) -> str:
    """--skip-bad -> --skip_bad; short flags and positionals as they are."""
    return "--" + name[2:].replace("-", "_") if name.startswith("--") else name


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
