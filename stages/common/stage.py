"""What every stage's ``main(argv)`` shares: events, the one-line error contract, exit codes.

A stage raises ``StageError`` for anything a person can fix (bad input, missing file, no disk space);
it becomes one ``error`` event and one line on stderr, never a traceback. Anything else is a bug:
the traceback goes to the log and the error event points there.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from core.config import Config, ConfigError, load_config
from core.errors import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Cancelled,
    StageError,
    UsageError,
)
from core.events import EventWriter
from core.fsutil import DiskSpaceError
from core.names import EventKind, RunStatus
from core.pipes import tolerate_closed_stdout


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


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so stages clean up the same way for both."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_stage(name: str, body: Callable[[EventWriter], dict | None], events: EventWriter | None = None) -> int:
    """Run ``body(events)``; turn its outcome into the final event and the exit code.

    ``body`` returns the summary fields of the ``done`` event. Raising ``Cancelled`` or
    KeyboardInterrupt ends the run as cancelled (exit 130).
    """
    tolerate_closed_stdout()  # `python -m stages.x ... | head`: the stage still does its work
    # Log lines go to stdout, so stderr carries only the one-line error a person must read.
    logging.basicConfig(
        level=os.environ.get("W4TUI_LOG_LEVEL", "INFO"),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpx2", "httpcore", "urllib3", "filelock"):  # one line per HTTP request is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    sigterm_as_interrupt()
    events = events or EventWriter.from_env(name)
    log = logging.getLogger(f"stages.{name}")
    try:
        events.emit(EventKind.START, args=sys.argv[1:], pid=os.getpid())
        log.info("%s started: %s", name, " ".join(sys.argv[1:]))
        summary = body(events) or {}
        events.done(RunStatus.SUCCEEDED, **summary)
        log.info("%s succeeded", name)
        return EXIT_OK
    except SystemExit as exc:  # argparse's --help: the run did what was asked
        if exc.code not in (0, None):
            raise
        if events.path is not None:  # run by the runner: end the run properly; alone: just the help text
            events.done(RunStatus.SUCCEEDED, help=True)
        return EXIT_OK
    except (Cancelled, KeyboardInterrupt):
        events.done(RunStatus.CANCELLED)
        print(f"{name}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (StageError, ConfigError, DiskSpaceError) as exc:
        _report(events, str(exc), getattr(exc, "hint", None))
        return EXIT_USAGE if isinstance(exc, (ConfigError, UsageError)) else EXIT_FAILED
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _internal_error(name, exc, events)
        where = f" writing {exc.filename}" if exc.filename else ""
        _report(events, f"disk full{where}: {exc.strerror}", "free some space and run again")
        return EXIT_FAILED
    except Exception as exc:
        return _internal_error(name, exc, events)
    finally:
        events.close()


def _report(events: EventWriter, message: str, hint: str | None) -> None:
    """The error event and the one ``error:`` line on stderr (alone, the writer would print the event to
    stderr as well: the same error twice)."""
    if events.path is not None:
        events.error(message, hint=hint)
    print(f"error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)


def _internal_error(name: str, exc: BaseException, events: EventWriter) -> int:
    """A bug: keep the traceback for the log, give the person one line."""
    traceback.print_exception(exc)
    events.error(
        f"internal error in {name}: {exc.__class__.__name__}: {exc}",
        hint="the traceback is in the run's output.log; please report it",
    )
    return EXIT_FAILED


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
