"""A night killed with kill -9 (issue 22 part 2), settled by the next one before it plans (catchup.py):
killed during verify or halfway through moving ``latest``, the pointers end either as before the promotion
(latest = the old build, previous = the one before it) or as after it (latest = the new build, previous =
the build latest served before), the ledger says which, and the next night trains the data again unless
its build really was promoted. Retention then reclaims what the dead night left, never what a live step
is still writing. Prepared state folders (ledger, run folders, the Ollama stand-in), no real night."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytest_plugins = ["ollama_fixtures"]
from core.config import load_config
from core.datafile import file_sha256
from core.ollama import client as oc
from core.ollama import promote as op
from w4tui.demo.samples import write_dataset
from w4tui.nightly import catchup, retention
from w4tui.nightly.ledger import LEDGER_FILE, Ledger, rebuild
from w4tui.nightly.plan import make_plan


class Killed(BaseException):
    """kill -9 of the verify stage between two requests: nothing after it runs."""


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def fake_run(config, run_id: str, stage: str, *, live=False, events=(), output=None, status=None, files=None):
    """A run folder as the runner leaves it; ``live``: its supervisor is this test process."""
    import psutil

    run_dir = config.paths.runs / run_id
    run_dir.mkdir(parents=True)
    pid = os.getpid() if live else dead_pid()
    record = {"id": run_id, "stage": stage, "command": [], "created": time.time() - 60, "output": output}
    record.update(supervisor_pid=pid, supervisor_ctime=psutil.Process(pid).create_time() if live else None)
    record.update(pid=pid, started=time.time() - 60)
    if status:
        record.update(status=status, ended=time.time() - 1, exit_code=0)
    (run_dir / "run.json").write_text(json.dumps(record))
    lines = [{"v": 1, "time": time.time(), "run": run_id, "stage": stage, **e} for e in events]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    for name, text in (files or {}).items():
        (run_dir / name).write_text(text)
    return run_id


@pytest.fixture
def world(modern_ollama, config_file):
    """latest = build-1, previous = build-0 (both promoted nights); build-2's night was killed in verify."""
    config = load_config()
    for i in range(3):
        modern_ollama.add_model(f"web4-agent:build-{i}", system=f"build {i}")
    for pointer, build in (("previous", 0), ("latest", 1)):
        modern_ollama.models[f"web4-agent:{pointer}"] = dict(modern_ollama.models[f"web4-agent:build-{build}"])
    op.record_move(config, "promoted", "web4-agent:build-1")
    data = write_dataset(config.paths.incoming / "incremental_2026-12-01.jsonl", 5, seed=3)
    ledger = Ledger.open(config)
    adapters = config.paths.outputs / "adapters"
    for i in range(3):
        (adapters / f"build-{i}").mkdir(parents=True)
        ledger.claim_night(f"now-{i}", trigger="now", outcome="promoted" if i < 2 else "running")
        ledger.upsert_build(
            f"build-{i}",
            night=f"now-{i}",
            adapter=str(adapters / f"build-{i}"),
            parent_adapter=str(adapters / f"build-{i - 1}") if i else None,
            data={f"/old/{i}.jsonl": f"{i}" * 64} if i < 2 else {str(data): file_sha256(data)},
            tag=f"web4-agent:build-{i}",
            verify="passed" if i < 2 else None,
            promoted=int(i < 2),
            promoted_at=time.time() - 100 + i if i < 2 else None,
        )
        ledger._update("builds", "build", f"build-{i}", {"created": time.time() - 100 + i})
    verify = fake_run(config, "r-verify", "verify")  # the verify stage, killed: no report, no final event
    driver = fake_run(config, "r-night", "nightly")
    ledger.update_night("now-2", build="build-2", run=driver, steps=[{"step": "verify", "run": verify}])
    digests = {i: modern_ollama.models[f"web4-agent:build-{i}"]["digest"] for i in range(3)}
    return config, ledger, modern_ollama, digests


def kill_the_promotion_after(copies: int) -> None:
    """verify --promote of build-2, killed right after the server did ``copies`` copies."""
    real_copy, done = oc.copy, {"n": 0}

    def copy(cfg, source, destination):
        if done["n"] == copies:
            raise Killed()
        real_copy(cfg, source, destination)
        done["n"] += 1

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oc, "copy", copy)
        if copies >= 2:  # both copies made, killed before the journal was removed
            mp.setattr(op, "_run_or_undo", lambda config, steps, latest, digest: (steps(), _raise()))
        with pytest.raises(Killed):
            op.promote(load_config(), "web4-agent:build-2")


def _raise():
    raise Killed()


@pytest.mark.parametrize("copies", [0, 1, 2])
def test_a_promotion_killed_at_any_copy_is_settled_by_the_next_night(world, copies):
    config, ledger, server, g = world
    kill_the_promotion_after(copies)
    assert (config.paths.state / op.JOURNAL).exists()
    lines = catchup.settle(config, ledger, exclude="tonight")
    assert not (config.paths.state / op.JOURNAL).exists()
    listed = oc.digests(config)
    finished = listed["web4-agent:latest"] == g[2]
    assert finished == (copies == 2)  # finished only where latest already held the new build
    for name in ("web4-agent:latest", "web4-agent:previous"):
        assert op.works(config, name, listed[name])
    night = ledger.night("now-2")
    plan = make_plan(config, ledger, build="tonight")
    if finished:
        assert listed["web4-agent:previous"] == g[1]  # the build latest served before
        assert (
            ledger.build("build-2")["promoted"] == 1
            and json.loads((config.paths.state / op.SERVED).read_text())["builds"] == "web4-agent:build-2"
        )
        assert night["outcome"] == "promoted" and "was completed" in lines[0]
        assert plan.skip and "already trained into build-2" in plan.skip  # served: really nothing new
    else:
        assert listed["web4-agent:previous"] == g[0]  # as before the promotion
        assert ledger.build("build-2")["promoted"] == 0
        assert night["outcome"] == "crashed" and night["failed_step"] == "verify"
        assert "driver died during verify" in night["error"]
        assert plan.skip is None and plan.parent_adapter == ledger.build("build-1")["adapter"]
        assert plan.data_file.name == "incremental_2026-12-01.jsonl"  # never served: trained again
    assert all(server.working(f"web4-agent:build-{i}") for i in range(3))


def test_a_driver_killed_during_verify_is_settled_from_the_verify_run(world):
    """The driver died; its verify step (a detached run) went on and promoted: the ledger learns it."""
    config, ledger, server, g = world
    for pointer, build in (("previous", 1), ("latest", 2)):
        server.models[f"web4-agent:{pointer}"] = dict(server.models[f"web4-agent:build-{build}"])
    report = json.dumps({"model": "web4-agent:build-2", "passed": True, "promoted": True})
    verify = fake_run(config, "r-verify2", "verify", status="succeeded", files={"verify.json": report})
    ledger.update_night("now-2", steps=[{"step": "verify", "run": verify}])
    catchup.settle(config, ledger)
    assert ledger.build("build-2")["promoted"] == 1 and ledger.build("build-2")["verify"] == "passed"
    assert ledger.night("now-2")["outcome"] == "promoted"
    assert catchup.settle(config, ledger) == []  # settled once


def test_a_verify_killed_after_the_promotion_before_its_report_still_promoted(world):
    """Killed after latest moved and the move was recorded, before verify.json: the build is promoted."""
    config, ledger, server, g = world
    op.promote(config, "web4-agent:build-2")  # done; the verify (and the night) died right after
    catchup.settle(config, ledger)
    assert oc.digests(config)["web4-agent:previous"] == g[1]
    assert ledger.build("build-2")["promoted"] == 1 and ledger.night("now-2")["outcome"] == "promoted"
    plan = make_plan(config, ledger, build="tonight")
    assert plan.skip and "already trained into build-2" in plan.skip


def test_a_night_whose_step_outlived_it_is_left_until_the_step_ends(world):
    config, ledger, server, g = world
    live = fake_run(config, "r-convert", "convert", live=True)
    ledger.update_night("now-2", steps=[{"step": "convert", "run": live}])
    assert catchup.settle(config, ledger) == []
    assert ledger.night("now-2")["outcome"] == "running"


# -- retention after a dead night ----------------------------------------------------------------------
def partial(directory: Path, name: str) -> Path:
    """A partial as core/fsutil.atomic_path leaves it, its writer's lock file inside."""
    path = directory / f".{name}.x1y2.partial"
    path.mkdir(parents=True)
    (path / name).write_bytes(b"half a GGUF")
    (path / ".writer.lock").write_bytes(b"")
    return path


def test_retention_reclaims_what_a_killed_night_left_and_not_what_a_live_writer_holds(world):
    config, ledger, server, g = world
    gguf = config.paths.outputs / "gguf"
    f16 = gguf / "build-2-f16.gguf"
    gguf.mkdir(parents=True)
    f16.write_bytes(b"GGUF" * 1000)
    quant = gguf / "build-2-Q4_K_M.gguf"
    dead = partial(gguf, quant.name)  # the quantize step was killed mid-write
    convert = fake_run(
        config,
        "r-convert",
        "convert",
        status="succeeded",
        events=[{"kind": "artifact", "path": str(f16), "type": "gguf"}],
    )
    quantize = fake_run(config, "r-quantize", "quantize", output=str(quant))
    ledger.update_night(
        "now-2", steps=[{"step": "convert", "run": convert}, {"step": "quantize", "run": quantize}]
    )  # the driver died before it recorded the convert's end: the ledger has no F16 for build-2
    other = partial(gguf, "build-1-Q4_K_M.gguf")  # a writer that is alive: its lock is held
    held = os.open(other / ".writer.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        catchup.settle(config, ledger)
        lines = retention.apply(config, ledger)
    finally:
        os.close(held)
    assert not f16.exists() and not dead.exists(), lines
    assert other.exists()
    assert any("deleted" in line and "build-2-f16.gguf" in line and "crashed" in line for line in lines), lines
    assert any("1 partial file(s) the killed steps of build-2 left" in line for line in lines), lines
    assert ledger.build("build-2")["f16_deleted"]
    assert (config.paths.outputs / "adapters" / "build-2").exists()  # the adapter goes only by [nightly] keep


def test_a_live_nights_f16_and_partials_are_not_touched(world):
    config, ledger, server, g = world
    gguf = config.paths.outputs / "gguf"
    f16 = gguf / "build-2-f16.gguf"
    gguf.mkdir(parents=True)
    f16.write_bytes(b"GGUF")
    stale = partial(gguf, "build-2-Q4_K_M.gguf")
    ledger.upsert_build("build-2", f16=str(f16))
    live = fake_run(config, "r-night-live", "nightly", live=True)
    ledger.update_night("now-2", run=live)
    catchup.settle(config, ledger)
    retention.apply(config, ledger)
    assert f16.exists() and stale.exists() and ledger.night("now-2")["outcome"] == "running"


def test_an_imported_adapter_is_kept_by_retention_and_rebuilt_into_the_ledger(world, tmp_path):
    config, ledger, server, g = world
    (config.file).write_text("[nightly]\nkeep = 1\n")
    config = load_config(config.file)
    imported = config.paths.outputs / "adapters" / "imported-20261203"
    imported.mkdir()
    (imported / "import.json").write_text(json.dumps({"source": "gpu-box:x", "base_model": "/m", "imported_at": 5.0}))
    (imported / "training_run.json").write_text(json.dumps({"data": {"/big.jsonl": "e" * 64}, "args": {"epochs": 3}}))
    ledger.upsert_build("imported-20261203", adapter=str(imported), base_model="/m")
    ledger._update("builds", "build", "imported-20261203", {"created": 5.0})  # the oldest build of all
    server.models.pop("web4-agent:previous")
    for i in (0, 1):
        ledger.upsert_build(f"build-{i}", promoted=0)
    retention.apply(config, ledger)
    assert imported.is_dir() and not ledger.build("imported-20261203")["deleted"]
    assert ledger.build("build-0")["deleted"]  # a night's build out of keep does go
    ledger.close()
    (config.paths.state / LEDGER_FILE).unlink()
    again = rebuild(config).build("imported-20261203")
    assert again["adapter"] == str(imported) and again["data"] == {"/big.jsonl": "e" * 64}
    assert again["hparams"] == {"epochs": 3} and again["created"] == 5.0


def test_a_dry_run_settles_nothing_and_says_what_the_night_will(world, cli):
    config, ledger, server, g = world
    kill_the_promotion_after(1)
    out = cli("nightly", "--dry-run")
    assert out.rc == 0 and ledger.night("now-2")["outcome"] == "running"
    assert "note: the night first finishes or undoes the interrupted promotion of web4-agent:build-2" in out.stdout
    assert (config.paths.state / op.JOURNAL).exists()
