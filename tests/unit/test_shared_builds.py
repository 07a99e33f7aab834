"""The suite's shared builds (tests/support/shared_builds.py): built once per run however many xdist
workers ask, and a test that writes to one fails, named."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]
SUPPORT = Path(__file__).resolve().parents[1] / "support"

CONFTEST = """
import os, pytest
from shared_builds import check_unchanged, shared_build

@pytest.fixture(scope="session")
def built(tmp_path_factory):
    def build(directory):
        with open(os.environ["BUILDS_LOG"], "a") as log:
            log.write(os.environ.get("PYTEST_XDIST_WORKER", "plain") + "\\n")
        (directory / "model.bin").write_text("weights")
        return directory / "model.bin"
    return shared_build(tmp_path_factory, "model", build)

@pytest.fixture(autouse=True)
def _unchanged():
    yield
    check_unchanged()
"""

READERS = """
import pytest

@pytest.mark.parametrize("i", range(8))
def test_reads(built, i):
    assert built.read_text() == "weights"
"""


def run(pytester, tmp_path, monkeypatch, *args):
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / "builds.log"
    monkeypatch.setenv("BUILDS_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # this test may itself run on a worker
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # a bare pytest starts in a second, not ten
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "xdist", *args)
    return result, log.read_text().split() if log.exists() else []


def test_two_workers_build_it_once_and_both_read_it(pytester, tmp_path, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_readers=READERS)
    result, builds = run(pytester, tmp_path, monkeypatch, "-n", "2", "--dist", "load")
    result.assert_outcomes(passed=8)
    assert len(builds) == 1 and builds[0].startswith("gw"), builds
    result, builds = run(pytester, tmp_path / "plain", monkeypatch)  # no workers: the same, in the session
    result.assert_outcomes(passed=8)
    assert builds == ["plain"]


def test_a_test_that_writes_to_a_shared_build_fails_and_is_named(pytester, tmp_path, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_writer="""
def test_reads(built):
    assert built.read_text() == "weights"

def test_writes(built):
    built.write_text("changed")

def test_reads_after(built):
    assert built.exists()
"""
    )
    result, builds = run(pytester, tmp_path, monkeypatch)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_writes*", "*changed during this test (model.bin*"])
    assert builds == ["plain"]
