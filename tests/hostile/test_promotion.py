"""The promotion sequence broken at every step (issue 9 item 2): an Ollama 500, a connection cut before or
after the server acted, a copy that leaves its destination truncated (server/images.go CopyModel
truncates first), and the process killed between two calls. After each, ``latest`` and ``previous``
both work (they list a digest and /api/show reads them), neither lost a good build, and the next run
finishes the job: latest = the new build, previous = the old latest, and a rollback works."""

import json

import pytest

pytest_plugins = ["ollama_fixtures"]
from core.config import load_config
from core.ollama import client as oc
from core.ollama import promote as op

FAULTS = ["500", "500-broken", "cut", "cut-done", "cut-broken", "killed"]


class Killed(BaseException):
    """The verify process killed between two requests (not an error any handler catches)."""


@pytest.fixture
def server(modern_ollama, config_file):
    for i in range(3):  # build-0 is previous, build-1 latest, build-2 the newly verified build
        modern_ollama.add_model(f"web4-agent:build-{i}", system=f"build {i}")
    for pointer, build in (("previous", 0), ("latest", 1)):
        modern_ollama.models[f"web4-agent:{pointer}"] = dict(modern_ollama.models[f"web4-agent:build-{build}"])
    return modern_ollama


def digest(server, name):
    return server.models[name]["digest"]


def pointers_work(server, config, allowed_latest, allowed_previous):
    """latest and previous each list one of the allowed digests and can be read."""
    listed = oc.digests(config)
    assert listed.get("web4-agent:latest") in allowed_latest, listed
    assert listed.get("web4-agent:previous") in allowed_previous, listed
    for name in ("web4-agent:latest", "web4-agent:previous"):
        assert op.works(config, name, listed[name]), name


def copies_of_a_clean_promotion(config_file) -> int:
    from ollama_standin import OllamaStandIn

    with OllamaStandIn(version="0.33.0") as clean:
        import os

        saved = os.environ["OLLAMA_HOST"]
        os.environ["OLLAMA_HOST"] = clean.url
        try:
            for i in range(3):
                clean.add_model(f"web4-agent:build-{i}", system=f"build {i}")
            for pointer, build in (("previous", 0), ("latest", 1)):
                clean.models[f"web4-agent:{pointer}"] = dict(clean.models[f"web4-agent:build-{build}"])
            op.promote(load_config(), "web4-agent:build-2")
            return sum(1 for m, p in clean.requests if p == "/api/copy")
        finally:
            os.environ["OLLAMA_HOST"] = saved


@pytest.mark.parametrize("fault", FAULTS)
def test_a_promotion_broken_at_any_copy_leaves_both_pointers_working(server, config_file, fault, monkeypatch):
    config = load_config()
    steps = copies_of_a_clean_promotion(config_file)
    assert steps >= 2  # previous gets the old latest, then latest gets the build
    g0, g1, g2 = (digest(server, f"web4-agent:build-{i}") for i in range(3))
    for step in range(steps):
        # the state before every attempt: previous = build-0, latest = build-1
        for pointer, build in (("previous", 0), ("latest", 1)):
            server.models[f"web4-agent:{pointer}"] = dict(server.models[f"web4-agent:build-{build}"])
        calls = {"n": 0}
        real_copy = oc.copy

        def copy(cfg, source, destination, step=step, calls=calls, real_copy=real_copy):
            calls["n"] += 1
            if calls["n"] - 1 == step and fault == "killed":
                real_copy(cfg, source, destination)
                raise Killed()
            return real_copy(cfg, source, destination)

        monkeypatch.setattr(oc, "copy", copy)
        server.faults["/api/copy"] = ["ok"] * step + ([fault] if fault != "killed" else [])
        try:  # a cut after the server acted may still end in success: the check afterwards sees the copy
            op.promote(config, "web4-agent:build-2")
            assert fault.startswith("cut-done"), f"{fault} at copy {step + 1} went unnoticed"
        except (oc.OllamaError, Killed):
            pass
        monkeypatch.setattr(oc, "copy", real_copy)
        server.faults.clear()
        if fault != "killed":  # the failed run repaired what it broke at once
            pointers_work(server, config, {g1, g2}, {g0, g1})
        # the next run (recover first) finishes the promotion; nothing was lost
        result = op.promote(config, "web4-agent:build-2")
        assert "web4-agent:latest" in result
        pointers_work(server, config, {g2}, {g1})
        assert all(server.working(f"web4-agent:build-{i}") for i in range(3))
        assert not (config.paths.state / op.JOURNAL).exists()
    assert "rolled back" in op.rollback(config) and digest(server, "web4-agent:latest") == g1


@pytest.mark.parametrize("fault", ["500", "cut-done", "500-broken"])
def test_a_broken_repair_is_finished_by_the_next_run(server, config_file, fault):
    """The copy onto latest fails, and so does the immediate repair: the journal stays and the next
    promote puts things right before it starts."""
    config = load_config()
    g1, g2 = digest(server, "web4-agent:build-1"), digest(server, "web4-agent:build-2")
    server.faults["/api/copy"] = ["ok", "500-broken", fault, fault, fault]  # previous ok, latest broken, repairs fail
    with pytest.raises(oc.OllamaError):
        op.promote(config, "web4-agent:build-2")
    journal = json.loads((config.paths.state / op.JOURNAL).read_text())
    assert journal["latest_before"] == g1 and journal["latest_after"] == g2
    server.faults.clear()
    assert "an interrupted promotion of web4-agent:build-2 was" in op.promote(config, "web4-agent:build-2")
    pointers_work(server, config, {g2}, {g1})


def test_a_previous_that_no_build_tag_holds_is_kept_under_a_kept_tag(server, config_file):
    """Never lose the only copy of a good build: previous's content is kept before previous moves."""
    config = load_config()
    g0 = digest(server, "web4-agent:build-0")
    del server.models["web4-agent:build-0"]  # its build tag was removed; only previous holds it
    op.promote(config, "web4-agent:build-2")
    kept = [n for n in server.models if n.startswith("web4-agent:kept-")]
    assert kept == [f"web4-agent:kept-{g0[:12]}"] and op.works(config, kept[0], g0)


def test_the_first_promotion_broken_leaves_no_half_made_latest(modern_ollama, config_file):
    config = load_config()
    modern_ollama.add_model("web4-agent:build-1")
    modern_ollama.faults["/api/copy"] = ["cut-broken", "500"]  # latest half-written, the repair refused
    with pytest.raises(oc.OllamaError):
        op.promote(config, "web4-agent:build-1")
    modern_ollama.faults.clear()
    op.promote(config, "web4-agent:build-1")
    assert op.works(config, "web4-agent:latest", digest(modern_ollama, "web4-agent:build-1"))
    assert "web4-agent:previous" not in oc.digests(config)


def test_a_rollback_cut_midway_keeps_latest_working(server, config_file):
    config = load_config()
    g0, g1 = digest(server, "web4-agent:build-0"), digest(server, "web4-agent:build-1")
    server.faults["/api/copy"] = ["cut-broken"]
    with pytest.raises(oc.OllamaError):
        op.rollback(config)
    pointers_work(server, config, {g1}, {g0})  # put back at once from build-1
    assert "rolled back" in op.rollback(config)
    pointers_work(server, config, {g0}, {g0})
