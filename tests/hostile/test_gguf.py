"""Damaged GGUF files given to quantize and deploy: found from the header before any work (the tensor
data must lie inside the file), named in one line, nothing written and nothing created on the server."""

from __future__ import annotations

import shutil
import struct

import pytest
from conftest import assert_one_line, leftovers, listing

from core.gguf_header import NotGGUF, read_info

pytest_plugins = ["ollama_fixtures"]


def cut(path, keep):
    with open(path, "r+b") as fh:
        fh.truncate(keep(path.stat().st_size))


DAMAGE = {  # how the file is damaged -> what the line must say
    "cut in the tensor data": (lambda p, info: cut(p, lambda n: n // 2), "truncated: tensor"),
    "cut by one byte": (lambda p, info: cut(p, lambda n: n - 1), "truncated: tensor"),
    "only the header left": (lambda p, info: cut(p, lambda n: info.data_offset), "truncated: tensor"),
    "cut in the header": (lambda p, info: cut(p, lambda n: 4096), "truncated or corrupt GGUF header"),
    "empty": (lambda p, info: cut(p, lambda n: 0), "empty file"),
    "not a GGUF": (lambda p, info: p.write_bytes(b"PK\x03\x04 a zip file"), "not a GGUF file"),
    "a tensor count beyond reason": (lambda p, info: _poke(p, 8, struct.pack("<Q", 2**40)), "truncated or corrupt"),
}


def _poke(path, offset, data):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@pytest.fixture
def bad_gguf(workspace, tiny_gguf, request):
    damage, named = DAMAGE[request.param]
    path = workspace / "outputs" / "gguf" / "bad-f16.gguf"
    path.parent.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, path)
    damage(path, read_info(tiny_gguf))
    return path, named


@pytest.mark.parametrize("bad_gguf", list(DAMAGE), indirect=True)
def test_quantize_names_a_damaged_gguf_and_writes_nothing(workspace, bad_gguf, stage):
    path, named = bad_gguf
    before = listing(workspace)
    result = stage("quantize", "--input", path, "--output", "outputs/gguf/bad-Q4_K_M.gguf")
    assert_one_line(result, 1, str(path), named)
    assert listing(workspace) == before and not leftovers(workspace)


@pytest.mark.parametrize(
    "bad_gguf", ["cut in the tensor data", "cut by one byte", "only the header left"], indirect=True
)
def test_deploy_refuses_a_truncated_gguf_before_the_server_sees_it(workspace, bad_gguf, stage, ollama):
    path, named = bad_gguf
    models = dict(ollama.models)
    result = stage("deploy_ollama", "--gguf", path, "--tag", "build-1")
    assert_one_line(result, 1, str(path), named)
    assert ollama.models == models and not any(p.startswith("/api/blobs") for _, p in ollama.requests)


def test_the_extent_check_knows_every_tensor_type_gguf_py_knows(tiny_gguf):
    from gguf import GGML_QUANT_SIZES

    from core.gguf_header import TYPE_SIZES

    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        if int(qtype) in TYPE_SIZES:
            assert TYPE_SIZES[int(qtype)] == (block, size), qtype.name
    assert read_info(tiny_gguf).tensors  # and a whole file passes


def test_a_tensor_pointing_past_the_end_is_named(tmp_path, tiny_gguf):
    path = tmp_path / "x.gguf"
    shutil.copyfile(tiny_gguf, path)
    info = read_info(path)
    cut(path, lambda n: n - 64)  # the last tensor's data is gone, every other is whole
    with pytest.raises(NotGGUF, match=rf"truncated: tensor {info.tensors[-1][0]} ends at byte \d+, the file has"):
        read_info(path)
