"""One spelling of sizes and durations (core/units.py): the panes, the CLI, pre-flight, the night and every
stage's disk-full error read the same (moved here from the four modules that each had their own)."""

import shutil
from collections import namedtuple

import pytest

from core import units
from core.fsutil import DiskSpaceError, check_free_space


def test_sizes_are_decimal_as_ollama_list_shows_them():
    assert (units.size(1536), units.size(None), units.size(21.3e9)) == ("1.5 KB", "-", "21.3 GB")  # GB = 10^9
    assert units.size(512) == "512 B" and units.size(19.6 * 2**30) == "21.0 GB"


def test_figures_side_by_side_are_gb_and_mb_below_one_gb():
    assert units.gb(21e9) == "21.0 GB" and units.gb(19.6 * 2**30) == "21.0 GB" and units.gb(340983808) == "341 MB"
    assert units.gb(None) == "-"


def test_durations_read_at_a_glance_and_line_up():
    assert [units.duration(s) for s in (0, 12.4, 60, 75, 250.2, 3600, 3725, 90000)] == [
        "0m00s", "0m12s", "1m00s", "1m15s", "4m10s", "1h00m", "1h02m", "1d01h"
    ]  # fmt: skip
    assert units.duration(None) == units.duration(-1) == units.duration(float("nan")) == "-"


def test_an_estimate_reads_in_words():
    assert units.rough_duration(59) == "1 min" and units.rough_duration(3600) == "1 h"
    assert units.rough_duration(7260) == "2 h 1 min"


def test_a_disk_full_error_says_gb_as_pre_flight_does(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 3 * 10**9))
    with pytest.raises(DiskSpaceError, match=r": 3\.0 GB free, the GGUF needs 15\.2 GB; free 12\.2 GB or"):
        check_free_space(tmp_path, int(15.2e9), "the GGUF")
