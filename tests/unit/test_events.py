import json

from core.events import EventReader, EventWriter, format_event, read_events


def test_writer_appends_flat_versioned_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter("train", path, run="r1")
    writer.metrics(step=3, total_steps=10, loss=1.25)
    writer.artifact(tmp_path / "adapter", "adapter", parent="base")
    writer.close()
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["v"] == 1 and first["run"] == "r1" and first["stage"] == "train" and first["kind"] == "metrics"
    assert first["step"] == 3 and isinstance(first["time"], float)
    assert json.loads(lines[1])["path"] == str(tmp_path / "adapter")


def test_reader_skips_garbage_and_keeps_unknown_keys(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"kind": "log", "message": "a", "future_key": [1, 2]}\n'
        "not json at all\n"
        "[1, 2, 3]\n"
        '{"no_kind": true}\n'
        "\n"
        '{"kind": "done", "status": "succeeded"}\n'
    )
    events = read_events(path)
    assert [e["kind"] for e in events] == ["log", "done"]
    assert events[0]["future_key"] == [1, 2]


def test_reader_waits_for_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "progress", "done": 1}\n{"kind": "progress", "do')
    reader = EventReader(path)
    assert [e["done"] for e in reader.read()] == [1]
    with open(path, "a") as fh:
        fh.write('ne": 2}\n{"kind": "progress", "done": 3}\n')
    assert [e["done"] for e in reader.read()] == [2, 3]
    assert reader.read() == []


def test_reader_of_missing_file_is_empty(tmp_path):
    assert EventReader(tmp_path / "nope.jsonl").read() == []


def test_invalid_utf8_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'\xff\xfe{"kind": "log"}\n{"kind": "done"}\n')
    assert [e["kind"] for e in read_events(path)] == ["done"]


def test_format_event_is_one_readable_line():
    line = format_event({"stage": "convert", "kind": "error", "message": "bad", "hint": "fix it"})
    assert line == "[convert] error: bad (fix it)"
    assert "3/10" in format_event({"stage": "train", "kind": "progress", "done": 3, "total": 10, "unit": "steps"})


def test_a_start_line_says_what_started():
    # `w4tui pipeline` and `nightly --now` printed "[train] start: " with nothing after it.
    start = {"stage": "train", "kind": "start", "pid": 42, "args": ["--dataset", "my data.jsonl", "--epochs", "1"]}
    assert format_event(start) == "[train] start: pid 42  --dataset 'my data.jsonl' --epochs 1"
    assert format_event({"stage": "pipeline", "kind": "start", "stages": ["train", "convert"]}).endswith(
        "start: train > convert"
    )
    assert format_event({"stage": "nightly", "kind": "start", "night": "now-1"}) == "[nightly] start: night now-1"
