from __future__ import annotations

import pytest
from agentflow_gateway.templates import TemplateError, Variable, decode_value, parse


def test_literals_only() -> None:
    template = parse("/v1/runs")
    assert template.segments == ("v1", "runs")
    assert template.verb is None
    assert template.variables == ()
    assert template.compile().fullmatch("/v1/runs")
    assert not template.compile().fullmatch("/v1/runs/x")


def test_variable_defaults_to_one_segment() -> None:
    template = parse("/v1/things/{id}")
    assert template.segments == ("v1", "things", Variable(("id",), ("*",)))
    found = template.compile().fullmatch("/v1/things/abc")
    assert found is not None and found.groups() == ("abc",)
    assert template.compile().fullmatch("/v1/things/a/b") is None


def test_variable_with_pattern_and_verb() -> None:
    template = parse("/v1/{name=runs/*}:cancel")
    assert template.verb == "cancel"
    assert template.variables == (Variable(("name",), ("runs", "*")),)
    assert template.literal_count == 2
    found = template.compile().fullmatch("/v1/runs/r1:cancel")
    assert found is not None and found.groups() == ("runs/r1",)
    assert template.compile().fullmatch("/v1/runs/r1") is None
    assert template.compile().fullmatch("/v1/workflows/r1:cancel") is None


def test_nested_field_path() -> None:
    template = parse("/v1/{memory.name=memories/*}")
    assert template.variables[0].field_path == ("memory", "name")


def test_double_wildcard_takes_the_rest() -> None:
    template = parse("/v1/{path=files/**}:read")
    found = template.compile().fullmatch("/v1/files/a/b/c:read")
    assert found is not None and found.groups() == ("files/a/b/c",)


def test_anonymous_wildcards() -> None:
    template = parse("/v1/*/items/**")
    assert template.segments == ("v1", "*", "items", "**")
    assert template.compile().fullmatch("/v1/x/items/a/b")


@pytest.mark.parametrize(
    "bad",
    [
        "v1/runs",  # no leading slash
        "/v1/{name=runs/*",  # unclosed variable
        "/v1/{name={inner}}",  # nested variable
        "/v1/**/runs",  # ** not last
        "/v1/{a}/{a}",  # variable bound twice
        "/v1/{1bad}",  # not an identifier
        "/v1/runs:",  # empty verb
        "/v1//runs",  # empty segment
        "/v1/runs:cancel/more",  # verb not last
    ],
)
def test_invalid_templates(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse(bad)


def test_decode_keeps_encoded_slash() -> None:
    assert decode_value("runs/a%20b") == "runs/a b"
    assert decode_value("runs/a%2Fb") == "runs/a%2Fb"
    assert decode_value("runs/plain") == "runs/plain"
