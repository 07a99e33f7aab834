"""Model names checked as Ollama's types/model/name.go checks them, and the source selectors of
internal/modelref/modelref.go (item 7 of issue 12)."""

import pytest

from core.ollama.names import name_problem, parse, tag_problem


@pytest.mark.parametrize(
    "name",
    [
        "web4-agent",
        "web4-agent:build-20261126-2130",
        "Web4_Agent",
        "team/web4-agent:v1.2",
        "registry.local:5000/team/web4-agent:x",
        "_private",
        "m" * 80,
        "m:" + "t" * 80,
    ],
)
def test_names_the_server_accepts(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name,problem",
    [
        ("my.team/web4-agent", "the namespace 'my.team' contains '.'"),
        ("m" * 81, "the model is 81 characters long; Ollama allows at most 80"),
        ("m:" + "t" * 81, "the tag is 81 characters long"),
        ("-agent", "the model '-agent' must start with a letter, digit or '_'"),
        ("web4 agent", "the model 'web4 agent' must start"),
        ("wéb4", "the model 'wéb4' must start"),  # name.go compares bytes: ASCII only
        ("agent:", "the tag is empty"),
        ("team//agent", "the namespace is empty"),
        ("a/b/c/d", "the host 'a/b'"),
    ],
)
def test_names_the_server_refuses(name, problem):
    assert name_problem(name).startswith(problem)


def test_parse_fills_the_defaults_like_parse_name():
    assert parse("web4-agent") == {
        "host": "registry.ollama.ai",
        "namespace": "library",
        "model": "web4-agent",
        "tag": "latest",
    }
    assert parse("h:1/ns/m:t") == {"host": "h:1", "namespace": "ns", "model": "m", "tag": "t"}


@pytest.mark.parametrize(
    "tag,selector", [("local", ":local"), ("cloud", ":cloud"), ("Cloud", ":cloud"), ("build-1-cloud", "-cloud")]
)
def test_routing_suffixes_are_not_build_tags(tag, selector):
    assert f"'{selector}' tag as a source selector" in tag_problem(tag)


def test_ordinary_build_tags_pass():
    for tag in ("build-20261126-2130", "b1", "cloudy", "local-build"):
        assert tag_problem(tag) is None
