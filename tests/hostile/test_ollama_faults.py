"""A misbehaving Ollama during deploy: down, HTTP 500 on each call, the connection cut mid-stream, and the
stage killed mid-upload. One line each; the GGUF is untouched; no build, no `latest` appears; a rerun works."""

from __future__ import annotations

import shutil

import pytest
from conftest import assert_one_line, listing, process

pytest_plugins = ["ollama_fixtures"]

TAG = "build-1"
BUILD = f"web4-agent:{TAG}"


@pytest.fixture
def gguf(workspace, tiny_gguf):
    path = workspace / "outputs" / "gguf" / "t-f16.gguf"
    path.parent.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, path)
    return path


def cut_after_first_line(server):
    """The create stream stops after its first line, as when the server dies or the network drops."""
    make = server._create_stream

    def stream(body):
        parts = make(body)
        yield next(parts)
        raise ConnectionResetError("the stand-in hangs up")

    server._create_stream = stream


def fail_upload(server):
    """The blob upload (not the HEAD probe before it) fails, as when the server's disk is full."""
    blob = server._blob
    server._blob = lambda method, digest, raw: (
        (500, {"error": "write /root/.ollama/models/blobs/x: no space left on device"})
        if method == "POST"
        else blob(method, digest, raw)
    )


FAULTS = {  # what goes wrong -> what the line must say
    "down": (None, "not reachable at http://127.0.0.1:9"),
    "500 on the version check": (lambda s, g: s.http_errors.update({"/api/version": (500, "boom")}), "HTTP 500"),
    "500 on the blob upload": (lambda s, g: fail_upload(s), "no space left on device"),
    "500 on create": (lambda s, g: s.http_errors.update({"/api/create": (500, "out of memory")}), "out of memory"),
    "the create stream cut": (lambda s, g: cut_after_first_line(s), "Ollama"),
    "an error inside the create stream": (
        lambda s, g: setattr(s, "fail_create", "unsupported architecture"),
        "unsupported architecture",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_deploy_against_a_misbehaving_ollama(workspace, gguf, ollama, stage, monkeypatch, fault):
    make, named = FAULTS[fault]
    if make is None:
        monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    else:
        make(ollama, gguf)
    before, models = listing(workspace), set(ollama.models)
    result = stage("deploy_ollama", "--gguf", gguf, "--tag", TAG, "--quantize", "none")
    assert_one_line(result, 1, named)
    assert set(ollama.models) == models and BUILD not in ollama.models
    assert "web4-agent:latest" not in ollama.models
    # The Modelfile that reproduces the build is written before the create, on purpose: with it the
    # person can run `ollama create -f` once the server is back. Nothing else may appear.
    assert {k: v for k, v in listing(workspace).items() if not k.endswith(".Modelfile")} == before
    ollama.http_errors.clear()
    if make is not None:  # the same command works once the server behaves
        for name in ("_create_stream", "_blob"):
            vars(ollama).pop(name, None)
        assert stage("deploy_ollama", "--gguf", gguf, "--tag", TAG, "--quantize", "none").rc == 0
        assert BUILD in ollama.models and "web4-agent:latest" not in ollama.models


def test_deploy_killed_mid_create_then_rerun(workspace, gguf, ollama):
    killed = process(
        "stages.deploy_ollama",
        "--gguf",
        gguf,
        "--tag",
        TAG,
        "--quantize",
        "none",
        kill_at="log:2",
        events=workspace / "k.jsonl",
    )
    assert killed.rc == -9
    assert "web4-agent:latest" not in ollama.models
    again = process(
        "stages.deploy_ollama", "--gguf", gguf, "--tag", TAG, "--quantize", "none", events=workspace / "r.jsonl"
    )
    assert again.rc == 0, again.stderr
    assert BUILD in ollama.models and "web4-agent:latest" not in ollama.models


def test_deploy_never_replaces_a_modelfile_it_did_not_write(workspace, gguf, ollama):
    """--modelfile naming the user's own file is refused before anything reaches the server; deploy's own
    Modelfile (next to the GGUF, from an earlier deploy) is replaced as before."""
    mine = workspace / "Modelfile"
    mine.write_text("FROM qwen2.5-coder\nSYSTEM my own, hand-tuned\n")
    before = listing(workspace)
    refused = process("stages.deploy_ollama", "--gguf", gguf, "--tag", TAG, "--modelfile", mine,
                      events=workspace / "m.jsonl")  # fmt: skip
    assert_one_line(refused, 1, "--modelfile", str(mine))
    assert mine.read_text() == "FROM qwen2.5-coder\nSYSTEM my own, hand-tuned\n" and BUILD not in ollama.models
    after = listing(workspace)
    assert {k: v for k, v in after.items() if k != "m.jsonl"} == before
    for run in ("a", "b"):  # the default Modelfile is deploy's own: written, then replaced by a second deploy
        done = process(
            "stages.deploy_ollama", "--gguf", gguf, "--tag", f"{TAG}{run}", events=workspace / f"{run}.jsonl"
        )
        assert done.rc == 0, done.stderr
    assert f"{BUILD}b" in gguf.with_suffix(".Modelfile").read_text()
