"""The errors stage code raises, and the exit codes they become (README: exit codes).

Library code imports only this module, never the argparse/config/event glue in ``stage``.
"""

from __future__ import annotations

from .names import NightOutcome, RunStatus

# The one table of exit codes (README: exit codes); every program and command maps through it.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASHED, EXIT_CANCELLED = 0, 1, 2, 3, 130
EXIT_BY_STATUS = {
    RunStatus.SUCCEEDED: EXIT_OK,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CRASHED: EXIT_CRASHED,
    RunStatus.CANCELLED: EXIT_CANCELLED,
}
EXIT_BY_OUTCOME = {
    NightOutcome.PROMOTED: EXIT_OK,
    NightOutcome.SKIPPED: EXIT_OK,
    NightOutcome.FAILED: EXIT_FAILED,
    NightOutcome.CANCELLED: EXIT_CANCELLED,
    NightOutcome.CRASHED: EXIT_CRASHED,
}


class ActionableError(Exception):
    """The base of every failure a person can act on (a stage's, a config's, a run's, Ollama's): ``message``
    is one line, ``hint`` says what to do, ``exit_code`` is its row in the table above. Anything else that
    reaches a program's entry is a bug (a traceback in the log)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def event_fields(self) -> dict:
        """More fields for the run's ``error`` event (a night's outcome and failed step)."""
        return {}


class StageError(ActionableError):
    """A stage cannot go on: bad input, a missing file, no disk space (exit 1)."""


class UsageError(StageError):
    """A mistake in the command line (unknown flag, a value out of range): exit 2, like a config mistake."""

    exit_code = EXIT_USAGE


class RunError(ActionableError):
    """A run cannot be started, found or cancelled, or pre-flight refused it (w4tui/runs, w4tui/monitors);
    the message says why and what to do (exit 2: the command asked for something that cannot be)."""

    exit_code = EXIT_USAGE


class Cancelled(Exception):
    """Raised by a stage that stopped early because it was asked to (SIGINT/SIGTERM)."""


__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_CRASHED",
    "EXIT_CANCELLED",
    "EXIT_BY_STATUS",
    "EXIT_BY_OUTCOME",
    "ActionableError",
    "StageError",
    "UsageError",
    "RunError",
    "Cancelled",
]
