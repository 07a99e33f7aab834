"""The headless CLI as a user drives it: demo init, status, run, logs, pipeline, hangup."""

import json
import os
import pty
import signal
import subprocess
import sys
import time

from core.config import load_config
from w4tui.runs.runner import Runner


def w4tui(*args, check=True, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_demo_init_then_status_json(tmp_path):
    demo = tmp_path / "demo"
    started = time.monotonic()
    out = w4tui("demo", "init", str(demo)).stdout
    assert time.monotonic() - started < 30
    assert f"w4tui --config {demo / 'config.toml'}" in out
    config = load_config(demo / "config.toml")
    assert config.model.dir == demo / "models" / "tiny-qwen2" and (config.model.dir / "config.json").exists()
    assert len((demo / "data" / "train" / "web4_train.jsonl").read_text().splitlines()) >= 200
    assert list((demo / "data" / "incoming").glob("incremental_????-??-??.jsonl"))
    status = json.loads(w4tui("--config", str(demo / "config.toml"), "status", "--json").stdout)
    assert status["runs"] == []
    again = w4tui("demo", "init", str(demo), check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_run_wait_returns_the_stage_result_and_status_lists_it(tmp_path):
    demo = tmp_path / "demo"
    w4tui("demo", "init", str(demo))
    cfg = ["--config", str(demo / "config.toml")]
    proc = w4tui(*cfg, "run", "download", "--wait")
    assert "download succeeded" in proc.stdout
    runs = json.loads(w4tui(*cfg, "status", "--json").stdout)["runs"]
    assert [(r["stage"], r["status"]) for r in runs] == [("download", "succeeded")]
    assert runs[0]["artifacts"] == [str(demo / "models" / "tiny-qwen2")]
    bad = w4tui(
        *cfg,
        "run",
        "download",
        "--wait",
        "--",
        "--repo",
        str(tmp_path / "nowhere"),
        "--output",
        str(tmp_path / "x"),
        check=False,
    )
    assert bad.returncode == 1 and "error: " in bad.stdout and "no such directory" in bad.stdout
    assert "download" in w4tui(*cfg, "runs").stdout
    assert "no such directory" in w4tui(*cfg, "logs", "last").stdout


def test_run_stage_with_missing_input_says_what_to_run_first(tmp_path):
    demo = tmp_path / "demo"
    w4tui("demo", "init", str(demo))
    proc = w4tui("--config", str(demo / "config.toml"), "run", "convert", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: no merged to convert yet: run the stage before it first (w4tui run merge) or pass arguments after --"
    )


def test_pipeline_runs_in_order_and_exits_zero(tmp_path):
    demo = tmp_path / "demo"
    w4tui("demo", "init", str(demo))
    proc = w4tui("--config", str(demo / "config.toml"), "pipeline", "--to", "download")
    assert "pipeline succeeded: download" in proc.stdout
    bad = w4tui("--config", str(demo / "config.toml"), "pipeline", "--from", "verify", "--to", "train", check=False)
    assert bad.returncode == 2 and "--from verify comes after --to train" in bad.stderr


def test_closing_the_terminal_of_w4tui_run_leaves_the_stage_running(tmp_path, config_file):
    """`w4tui run` on a real terminal, following; the terminal closes; a new shell sees the run live."""
    (tmp_path / "models").mkdir()
    script = tmp_path / "slow.py"
    script.write_text(
        "import time\nfrom core.events import EventWriter\ne = EventWriter.from_env('download')\n"
        "for i in range(40):\n    e.progress(i, 40, 'bytes'); time.sleep(0.1)\n"
        "e.artifact('/tmp/m', 'model'); e.done()\n"
    )
    runner = Runner(load_config())
    pid, fd = pty.fork()
    if pid == 0:
        # The real CLI, with the download stage swapped for a slow stand-in module (slow.py in cwd).
        code = (
            "import sys; from w4tui.cli import main; from core import specs; "
            "specs.BY_NAME['download'] = specs.StageSpec('download', 'slow', 't', 'model', '--output', None, "
            "build_parser=specs.parsers.download); "
            "sys.exit(main(['run', 'download', '--', '--output', 'o']))"
        )
        os.chdir(tmp_path)
        os.execv(sys.executable, [sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r.stage == "download" and r.live for r in runner.runs()):
        try:
            os.read(fd, 4096)
        except OSError:
            break
    live = [r for r in runner.runs() if r.live]
    assert live, "the run never started"
    os.close(fd)  # hang up the terminal
    os.killpg(pid, signal.SIGHUP)
    os.waitpid(pid, 0)
    status = json.loads(w4tui("status", "--json").stdout)
    assert next(r for r in status["runs"] if r["id"] == live[0].id)["status"] == "running"


def test_stage_help_through_the_runner_is_a_finished_run(tmp_path):
    demo = tmp_path / "demo"
    w4tui("demo", "init", str(demo))
    proc = w4tui("--config", str(demo / "config.toml"), "run", "merge", "--wait", "--", "--help")
    assert "merge succeeded" in proc.stdout
    assert "--adapter" in w4tui("--config", str(demo / "config.toml"), "logs", "last").stdout
