"""Property tests on random bytes: the event reader never raises and never invents an event; the config
loader gives a Config or one ConfigError line naming the file, nothing else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Config, ConfigError, load_config
from core.events import EventReader, make_event, parse_line

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EVENT = st.builds(
    lambda kind, n, text: make_event("r", "s", kind, n=n, message=text),
    st.sampled_from(["progress", "log", "metrics", "error"]),
    st.integers(),
    st.text(max_size=40),
)
NOISE = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"[" * 5000, b"{" * 5000, b'{"kind": 1}', b"\xff\xfe", b"null", b'"kind"', b"1e999999"]),
)


@FAST
@given(st.lists(st.one_of(EVENT, NOISE), max_size=12), st.lists(st.integers(1, 64), max_size=20))
def test_the_reader_keeps_every_whole_event_and_skips_noise(tmp_path_factory, items, cuts):
    """Events and noise, appended in arbitrary pieces while a reader polls: the reader returns exactly
    the events (noise lines are dropped whatever they hold), and never raises."""
    path = tmp_path_factory.mktemp("ev") / "events.jsonl"
    data = b"".join((json.dumps(i).encode() if isinstance(i, dict) else i.replace(b"\n", b" ")) + b"\n" for i in items)
    reader, seen, at = EventReader(path), [], 0
    with open(path, "ab") as fh:
        for n in cuts + [len(data)]:
            fh.write(data[at : at + n])
            fh.flush()
            at += n
            seen += reader.read()
    expected = [i for i in items if isinstance(i, dict)]
    assert [e for e in seen if e.get("run") == "r" and e.get("stage") == "s"] == expected
    assert all(isinstance(e, dict) and isinstance(e["kind"], str) for e in seen)


@FAST
@given(st.binary(max_size=300))
def test_parse_line_on_random_bytes(raw):
    event = parse_line(raw)
    assert event is None or (isinstance(event, dict) and isinstance(event["kind"], str))


TOML_BITS = st.sampled_from(
    [
        "[train]\n",
        "[paths]\n",
        "[verify.expect]\n",
        "lora_r = ",
        "epochs = ",
        "inf",
        "nan",
        "-1",
        "1e400",
        '"x"',
        "[",
        "]",
        "{",
        "}",
        "=",
        "\n",
        '"""',
        "outputs = ",
        "a.b.c = 1\n",
        "\x00",
        "\xff",
        "[[train]]\n",
        "train = 1\n",
    ]
)


@FAST
@given(st.one_of(st.binary(max_size=300), st.lists(TOML_BITS, max_size=30).map(lambda p: "".join(p).encode())))
def test_the_config_loader_on_random_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(raw)
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message and "Traceback" not in message
    else:
        assert isinstance(config, Config) and config.train.lora_r > 0 and config.train.epochs < float("inf")
