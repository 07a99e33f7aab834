"""Training data: shapes, masking, truncation and the one-line errors for bad lines (tokenizer only)."""

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from core.errors import StageError
from stages.train.data import IGNORE, DataReport, read_records, tokenize
from stages.train.device import pick_device, pick_precision
from stages.train.tokenized import load_samples
from w4tui.demo.tinymodel import TOKENIZER_DIR


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def write(tmp_path, *lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
BAD_LINES = [
    ('{"messages": [', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"question": "a", "answer": "b"}', "unknown sample shape (keys: answer, question); expected messages"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role must be one of system, user"),
    ('{"messages": [{"role": "user", "content": 5}]}', "messages[0].content must be a string"),
    ('{"messages": [{"role": "user", "content": "only a question"}]}', "no non-empty assistant message"),
    ('{"instruction": "do it"}', "'output' must be a non-empty string"),
    ('{"instruction": "do", "input": 3, "output": "x"}', "'input' must be a string"),
    ('{"prompt": "a", "completion": ""}', "'completion' is empty"),
    ('{"text": ""}', "'text' must be a non-empty string"),
    (b'{"text": "\xff\xfe"}', "not valid UTF-8"),
]


@pytest.mark.parametrize("line,expected", BAD_LINES, ids=[b[1][:30] for b in BAD_LINES])
def test_bad_line_stops_with_file_and_line(tmp_path, line, expected):
    path = write(tmp_path, GOOD, "", line, GOOD)
    with pytest.raises(StageError) as info:
        read_records([path], skip_bad=False, report=DataReport(), log=print)
    assert str(info.value).startswith(f"{path}:3: ")  # blank lines still count
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert "--skip_bad" in info.value.hint


def test_skip_bad_counts_and_keeps_the_good(tmp_path):
    path = write(tmp_path, GOOD, "[1]", '{"text": ""}', GOOD)
    report, logged = DataReport(), []
    records = read_records([path], skip_bad=True, report=report, log=logged.append)
    assert len(records) == 2 and report.skipped == 2 and len(logged) == 2


def test_missing_empty_and_wrong_inputs(tmp_path, tok):
    with pytest.raises(StageError, match="no such file or directory"):
        load_samples(tmp_path / "nope.jsonl", tok, 64, "truncate", False, None, print)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(StageError, match="no .jsonl files in this directory"):
        load_samples(tmp_path / "empty_dir", tok, 64, "truncate", False, None, print)
    with pytest.raises(StageError, match="no usable samples"):
        load_samples(write(tmp_path, "", name="blank.jsonl"), tok, 64, "truncate", False, None, print)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(StageError, match="expected a .jsonl file"):
        load_samples(tmp_path / "data.csv", tok, 64, "truncate", False, None, print)


def test_assistant_only_masking_by_hand(tok):
    record = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello\nworld"},
            {"role": "user", "content": "More"},
            {"role": "assistant", "content": "Ok"},
        ]
    }
    sample, cut = tokenize(record, tok, 512, "truncate")
    assert not cut
    trained = tok.decode([t for t, y in zip(sample.ids, sample.labels) if y != IGNORE])
    # Exactly the two answers, each with its end-of-turn token; nothing of system, user or role headers.
    assert trained == "Hello\nworld<|im_end|>Ok<|im_end|>"
    first = int(np.argmax(sample.labels != IGNORE))
    assert tok.decode(sample.ids[:first]).endswith("<|im_start|>assistant\n")


def test_other_shapes(tok):
    inst, _ = tokenize({"instruction": "Add", "input": "1 2", "output": "3"}, tok, 512, "truncate")
    assert tok.decode([t for t, y in zip(inst.ids, inst.labels) if y != IGNORE]) == "3<|im_end|>"
    assert "<|im_start|>user\nAdd\n\n1 2<|im_end|>" in tok.decode(inst.ids)
    pc, _ = tokenize({"prompt": "Q: 2+2?\nA:", "completion": " 4"}, tok, 512, "truncate")
    assert tok.decode([t for t, y in zip(pc.ids, pc.labels) if y != IGNORE]) == " 4<|im_end|>"
    text, _ = tokenize({"text": "def f(): pass"}, tok, 512, "truncate")
    assert (text.labels == text.ids).all()


def test_overlong_is_truncated_or_dropped_and_counted(tmp_path, tok):
    long = json.dumps(
        {"messages": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "word " * 200}]}
    )
    path = write(tmp_path, GOOD, long)
    samples, report = load_samples(path, tok, 40, "truncate", False, None, print)
    assert len(samples) == 2 and report.truncated == 1 and max(len(s.ids) for s in samples) == 40
    samples, report = load_samples(path, tok, 40, "drop", False, None, print)
    assert len(samples) == 1 and report.dropped == 1
    with pytest.raises(StageError, match="all 2 samples were dropped"):
        load_samples(path, tok, 8, "drop", False, None, print)


def test_tokenized_data_is_cached(tmp_path, tok, monkeypatch):
    path = write(tmp_path, GOOD, GOOD.replace("yo", "hey"))
    first, report = load_samples(path, tok, 64, "truncate", False, tmp_path / "cache", print)
    import stages.train.tokenized as tokenized

    def no_tokenizing(*args):
        raise RuntimeError("tokenized again")

    monkeypatch.setattr(tokenized, "tokenize", no_tokenizing)
    again, report2 = load_samples(path, tok, 64, "truncate", False, tmp_path / "cache", print)
    assert [s.ids.tolist() for s in again] == [s.ids.tolist() for s in first] and report2 == report
    path.write_text(GOOD + "\n")  # other data: a new key, so it must tokenize (and fail here)
    with pytest.raises(RuntimeError, match="tokenized again"):
        load_samples(path, tok, 64, "truncate", False, tmp_path / "cache", print)


def test_device_choice():
    assert pick_device("auto", mps_available=True, cuda_available=True) == "mps"
    assert pick_device("auto", False, True) == "cuda" and pick_device("auto", False, False) == "cpu"
    assert pick_device("cpu", True, True) == "cpu"
    with pytest.raises(ValueError, match="no MPS backend"):
        pick_device("mps", False, True)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda", True, False)
    assert pick_precision("cpu", False).dtype == "float32"
    assert pick_precision("mps", bf16_supported=True).dtype == "bfloat16"
    old_mac = pick_precision("mps", bf16_supported=False)
    assert old_mac.dtype == "float16" and old_mac.grad_scaler


def test_mps_fallback_is_set_before_torch_loads():
    """torch reads PYTORCH_ENABLE_MPS_FALLBACK when it loads: the stage must not import torch before setting it."""
    import subprocess
    import sys

    code = (
        "import os, sys; os.environ.pop('PYTORCH_ENABLE_MPS_FALLBACK', None); import stages.train_lora as t; "
        "assert 'torch' not in sys.modules; t.torch_environment(); print(os.environ['PYTORCH_ENABLE_MPS_FALLBACK'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_bom_is_read_and_a_cut_line_names_its_column(tmp_path):
    """A file saved by a Windows editor starts with a BOM; a line cut short names where it ends."""
    from stages.train.data import DataReport, read_records

    good = tmp_path / "bom.jsonl"
    good.write_bytes(b"\xef\xbb\xbf" + b'{"text": "hello"}\n')
    assert [r for _, r in read_records([good], False, DataReport(), print)] == [{"text": "hello"}]
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"messages": [\n')
    with pytest.raises(StageError, match=r"cut\.jsonl:1: not valid JSON \(Expecting value at column 15\)"):
        read_records([cut], False, DataReport(), print)
