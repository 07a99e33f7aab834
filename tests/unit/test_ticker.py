"""The TUI's shared ticker thread: a round asked for (poked) while the job's round runs is not lost."""

from __future__ import annotations

import threading
import time

from w4tui.ui.widgets.ticker import Ticker


def test_a_poke_during_a_round_runs_the_job_again_at_once():
    ticker = Ticker()
    rounds: list[float] = []
    again = threading.Event()

    def work() -> None:
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            ticker.poke("job")  # e.g. the runs changed while the artifacts were being scanned
        else:
            again.set()

    ticker.add("job", work, lambda: 30.0)
    try:
        assert again.wait(5), f"the poke was lost: {len(rounds)} round(s) in 5 s with a 30 s interval"
        assert rounds[1] - rounds[0] < 2
    finally:
        ticker.remove("job")
