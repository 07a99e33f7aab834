"""Notifications: one POST per run end to a local HTTP server (127.0.0.1), sent by the supervisor after
the run's end is recorded; a server that is down never fails or delays a run; osascript on macOS."""

from __future__ import annotations

import http.server
import os
import stat
import sys
import threading
import time

import pytest

from core.config import load_config
from w4tui.monitors import notify
from w4tui.runs.runner import Runner

FAKE_STAGE = os.path.join(os.path.dirname(__file__), "..", "support", "fake_stage.py")


@pytest.fixture
def server():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.path, self.headers["Title"], body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/w4tui-topic", received
    httpd.shutdown()
    httpd.server_close()


def _wait_ended(runner, run, timeout=20.0):
    deadline = time.monotonic() + timeout
    while runner.get(run.id).live:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    return runner.get(run.id)


def test_one_post_per_run_end(config_file, server):
    url, received = server
    config_file.write_text(f'[notify]\nurl = "{url}"\ndesktop = false\n')
    runner = Runner(load_config(config_file))
    ok = runner.start_command("convert", [sys.executable, FAKE_STAGE, "--steps", "2", "--sleep", "0.01"])
    bad = runner.start_command("quantize", [sys.executable, FAKE_STAGE, "--steps", "1", "--sleep", "0.01", "--fail"])
    _wait_ended(runner, ok), _wait_ended(runner, bad)
    deadline = time.monotonic() + 10
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more arrives
    by_title = {title: (path, body) for path, title, body in received}
    assert len(received) == 2, received
    assert by_title["w4tui: convert succeeded"][0] == "/w4tui-topic"
    assert by_title["w4tui: convert succeeded"][1].startswith(f"run {ok.id} after ")
    assert by_title["w4tui: quantize failed"][1].endswith("fake failure: the input is wrong")


def test_a_server_that_is_down_does_not_fail_the_run(config_file):
    config_file.write_text('[notify]\nurl = "http://127.0.0.1:9/nobody"\ndesktop = false\n')
    runner = Runner(load_config(config_file))
    run = runner.start_command("convert", [sys.executable, FAKE_STAGE, "--steps", "1", "--sleep", "0.01"])
    assert _wait_ended(runner, run).status == "succeeded"
    assert notify.send("t", "b", url="http://127.0.0.1:9/nobody", desktop=False) == []


def test_off_by_default(config_file, server):
    url, received = server
    assert load_config(config_file).notify.url == ""
    runner = Runner(load_config(config_file))
    run = runner.start_command("convert", [sys.executable, FAKE_STAGE, "--steps", "1", "--sleep", "0.01"])
    _wait_ended(runner, run)
    time.sleep(0.3)
    assert received == []


def test_osascript_on_macos_only(tmp_path, monkeypatch):
    log = tmp_path / "osascript.args"
    fake = tmp_path / "osascript"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert notify.send("w4tui: train failed", 'run r1: "loss" is nan', system="Linux") == []
    assert notify.send("w4tui: train failed", 'run r1: "loss" is nan', system="Darwin") == ["osascript"]
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.read_text().splitlines() == [
        "-e",
        'display notification "run r1: \\"loss\\" is nan" with title "w4tui: train failed"',
    ]


def test_describe():
    record = {"id": "r1", "stage": "train", "status": "crashed", "started": 100.0, "ended": 100.0 + 3725}
    assert notify.describe(record, "out of memory") == ("w4tui: train crashed", "run r1 after 1h02m: out of memory")
    assert notify.describe({**record, "status": "succeeded"}, "ignored")[1] == "run r1 after 1h02m"


def test_end_watch_announces_each_end_it_saw_happen_once():
    from types import SimpleNamespace as R

    watch = notify.EndWatch()
    assert watch.ended([R(id="old", live=False), R(id="a", live=True)]) == []  # "old" ended before we looked
    assert watch.ended([R(id="old", live=False), R(id="a", live=True), R(id="b", live=True)]) == []
    ended = watch.ended([R(id="old", live=False), R(id="a", live=False), R(id="b", live=True)])
    assert [r.id for r in ended] == ["a"]
    assert watch.ended([R(id="a", live=False), R(id="b", live=False)])[0].id == "b"
    assert watch.ended([R(id="a", live=False), R(id="b", live=False)]) == []


def test_a_stage_inside_a_job_leaves_the_notification_to_the_job(monkeypatch):
    from w4tui.runs import supervise

    sent = []
    monkeypatch.setattr(notify, "run_ended", lambda record, error=None: sent.append((record["id"], error)))
    monkeypatch.setenv("W4TUI_RUN_ID", "pipeline-job-1")  # what a supervised job's children inherit
    supervise._notify({"id": "merge-run"}, [])
    monkeypatch.delenv("W4TUI_RUN_ID")
    supervise._notify({"id": "job"}, [{"kind": "error", "message": "quantize failed: no space"}])
    assert sent == [("job", "quantize failed: no space")]


def test_a_bad_notify_url_is_a_config_error(config_file):
    from core.config import ConfigError

    config_file.write_text('[notify]\nurl = "ntfy.sh/my-topic"\n')
    with pytest.raises(ConfigError, match=r"'notify\.url' must be empty or a URL like \"https://ntfy\.sh/my-topic\""):
        load_config(config_file)
    config_file.write_text("[notify]\ndesktop = 1\n")
    with pytest.raises(ConfigError, match=r"'notify\.desktop' must be true or false"):
        load_config(config_file)
