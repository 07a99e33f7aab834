"""The one entry of every background program: a stage, the pipeline job, the night.

``run_program`` writes the ``start`` event, runs the body, and turns how it ended into the final event
and the exit code (core/errors.py's table): what it returns is the ``done`` event (a ``status`` key for
an ending other than succeeded); an ``ActionableError`` is one ``error`` event and one ``error:`` line
with its hint, exit 1 or 2; Ctrl-C or SIGTERM (the supervisor's cancel) is ``done`` cancelled, exit 130;
a full disk is an actionable error too; anything else is a bug, its traceback kept for the log.
``report_error`` is the same one line for a foreground command (the CLI, the daemon).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable

from .errors import EXIT_BY_STATUS, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, ActionableError, Cancelled
from .events import EventWriter
from .names import EventKind, RunStatus
from .pipes import tolerate_closed_stdout


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so a program cleans up the same way for both."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_program(
    name: str,
    body: Callable[[EventWriter], dict | None],
    events: EventWriter,
    start: Callable[[], dict] = dict,
) -> int:
    """Run ``body(events)`` between the ``start`` event (``start()``'s fields: called inside, so a mistake
    there ends the run the same way) and the final one; return the exit code."""
    tolerate_closed_stdout()  # `python -m stages.x ... | head`: the program still does its work
    sigterm_as_interrupt()
    try:
        events.emit(EventKind.START, **start())
        summary = dict(body(events) or {})
        status = RunStatus(summary.pop("status", RunStatus.SUCCEEDED))
        events.done(status, **summary)
        return EXIT_BY_STATUS[status]
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
    except ActionableError as exc:
        report_error(exc.message, exc.hint, events, **exc.event_fields())
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _internal_error(name, exc, events)
        where = f" writing {exc.filename}" if exc.filename else ""
        report_error(f"disk full{where}: {exc.strerror}", "free some space and run again", events)
        return EXIT_FAILED
    except Exception as exc:
        return _internal_error(name, exc, events)
    finally:
        events.close()


def report_error(message: str, hint: str | None, events: EventWriter | None = None, **fields) -> None:
    """The error event (for a run) and the one ``error:`` line on stderr; alone, the writer would print the
    event to stderr as well: the same error twice."""
    if events is not None and events.path is not None:
        events.error(message, hint=hint, **fields)
    print(f"error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr, flush=True)


def _internal_error(name: str, exc: BaseException, events: EventWriter) -> int:
    """A bug: keep the traceback for the log, give the person one line."""
    traceback.print_exception(exc)
    events.error(
        f"internal error in {name}: {exc.__class__.__name__}: {exc}",
        hint="the traceback is in the run's output.log; please report it",
    )
    return EXIT_FAILED


def start_fields() -> dict:
    """A stage's start event: its arguments and pid."""
    return {"args": sys.argv[1:], "pid": os.getpid()}
