"""The vocabularies the runs, the events and the nights are written in, one type each.

``StrEnum`` members are their strings (``RunStatus.FAILED == "failed"``, JSON and f-strings write the bare
word), so run.json, events.jsonl and the ledger read the same as before and old files still compare equal.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status (``run.json`` ``status``, ``w4tui runs``): the first three while it lives."""

    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ended with an error event (or a non-zero exit)
    CANCELLED = "cancelled"
    CRASHED = "crashed"  # gone without a final event: killed, out of memory, power loss


LIVE_STATUSES = (RunStatus.STARTING, RunStatus.RUNNING, RunStatus.CANCELLING)
# A run that ended badly: its error and its log's tail are worth showing.
FAILED_STATUSES = (RunStatus.FAILED, RunStatus.CRASHED)


class EventKind(StrEnum):
    """The ``kind`` of an event (core/events.py documents each one's fields)."""

    START = "start"
    PROGRESS = "progress"
    METRICS = "metrics"
    ARTIFACT = "artifact"
    LOG = "log"
    DONE = "done"
    ERROR = "error"


FINAL_KINDS = (EventKind.DONE, EventKind.ERROR)


class NightOutcome(StrEnum):
    """A night's ``outcome`` in the ledger (the Schedule pane, ``w4tui nightly``, ``w4tui status``)."""

    STARTING = "starting"  # claimed by the scheduler, its driver not yet running
    RUNNING = "running"
    PROMOTED = "promoted"
    SKIPPED = "skipped"  # nothing to train on, or the night before still running
    MISSED = "missed"  # the machine was off or asleep past the grace period
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


LIVE_OUTCOMES = (NightOutcome.STARTING, NightOutcome.RUNNING)

__all__ = [
    "RunStatus",
    "EventKind",
    "NightOutcome",
    "LIVE_STATUSES",
    "FAILED_STATUSES",
    "FINAL_KINDS",
    "LIVE_OUTCOMES",
]
