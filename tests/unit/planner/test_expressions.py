"""Template expressions: comparisons, boolean logic, membership, literals, and their static checks."""

from __future__ import annotations

from typing import Any

import pytest
from agentflow_planner.definition import check_definition
from agentflow_runtime.templates import (
    TemplateError,
    expressions,
    parse_expression,
    references,
    render,
    rewrite_paths,
    to_text,
)

SCOPE: dict[str, Any] = {
    "input": {"lang": "en", "score": 0.75, "n": 3, "draft": False, "tags": ["a", "b"], "none": None},
    "steps": {
        "check": {"output": {"ok": True, "words": 12}, "status": "SUCCEEDED", "error": None},
        "fetch": {"output": None, "status": "FAILED", "error": {"code": "UNAVAILABLE"}},
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ input.n == 3 }}", True),
        ("{{ input.n != 3 }}", False),
        ("{{ input.n < 4 }}", True),
        ("{{ input.n <= 3 }}", True),
        ("{{ input.n > 3 }}", False),
        ("{{ input.score >= 0.75 }}", True),
        ("{{ input.lang < 'fr' }}", True),
        ('{{ input.lang == "en" }}', True),
        ("{{ 1 == true }}", False),
        ("{{ 0 == false }}", False),
        ("{{ 1 == 1.0 }}", True),
        ("{{ input.none == null }}", True),
        ("{{ input.lang in ['en', 'fr'] }}", True),
        ("{{ input.lang not in ['en', 'fr'] }}", False),
        ("{{ 'b' in input.tags }}", True),
        ("{{ 'ng' in 'long' }}", True),
        ("{{ 'ok' in steps.check.output }}", True),
        ("{{ 3 in [1, 2, input.n] }}", True),
        ("{{ true in [1] }}", False),
        ("{{ input.n > 1 and input.lang == 'en' }}", True),
        ("{{ input.n > 5 or input.draft }}", False),
        ("{{ not input.draft }}", True),
        ("{{ not not input.draft }}", False),
        ("{{ not input.n > 5 }}", True),
        ("{{ input.draft or input.n > 1 and input.lang == 'de' }}", False),
        ("{{ (input.draft or input.n > 1) and input.lang == 'en' }}", True),
        ("{{ steps.fetch.status == 'FAILED' and steps.fetch.error.code == 'UNAVAILABLE' }}", True),
        ("{{ steps.check.output.words | default(0) > 10 }}", True),
        ("{{ input.tags | length == 2 }}", True),
        ("{{ [1, 'two', null, [true]] }}", [1, "two", None, [True]]),
        ("{{ [] }}", []),
        ("{{ (input.lang) | upper }}", "EN"),
        ("{{ -1.5e1 < 0 }}", True),
        ("{{ input.tags }}", ["a", "b"]),
    ],
)
def test_evaluates(text: str, expected: Any) -> None:
    assert render(text, SCOPE) == expected


def test_boolean_results_interpolate_as_json() -> None:
    assert render("n>1: {{ input.n > 1 }}, lists: {{ [1, 2] }}", SCOPE) == "n>1: true, lists: [1,2]"


def test_and_or_short_circuit_so_missing_paths_on_the_other_side_are_not_read() -> None:
    assert render("{{ input.draft and input.missing.deep }}", SCOPE) is False
    assert render("{{ input.n or input.missing }}", SCOPE) is True
    with pytest.raises(TemplateError) as info:
        render("{{ input.n and input.missing }}", SCOPE)
    assert info.value.path == "input.missing"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ input.n < 'x' }}", "cannot order a number and a string"),
        ("{{ input.none > 1 }}", "cannot order a null and a number"),
        ("{{ true < false }}", "cannot order a boolean and a boolean"),
        ("{{ 1 in 'abc' }}", "cannot test a number in a string"),
        ("{{ 'a' in 3 }}", "cannot test a string in a number"),
    ],
)
def test_type_errors_name_the_expression(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(text, SCOPE)


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("{{ input.n == }}", 14, "expected a value"),
        ("{{ input.n < 1 < 2 }}", 15, "unexpected '<'"),
        ("{{ (input.n }}", 12, r"expected '\)'"),
        ("{{ [1, 2 }}", 9, r"expected '\]'"),
        ("{{ input.n and }}", 15, "expected a value"),
        ("{{ a = 1 }}", 5, "unexpected character '='"),
        ("{{ and }}", 3, "expected a value"),
        ("{{ input.n ! 1 }}", 11, "unexpected character '!'"),
        ("{{ 'open }}", 3, "unexpected character"),
        ("{{ in }}", 3, "expected a value"),
    ],
)
def test_syntax_errors_carry_a_position(text: str, position: int, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as info:
        render(text, SCOPE)
    assert info.value.position == position


def test_keywords_are_still_names_after_a_dot() -> None:
    scope = {"input": {"in": 1, "not": 2, "and": 3}}
    assert render("{{ input.in }}", scope) == 1
    assert render("{{ input.not == 2 and input.and == 3 }}", scope) is True


def test_expressions_and_references_see_every_operand() -> None:
    text = "{{ steps.a.output.x > 1 and (input.y in [steps.b.output, 'z'] or not steps['c-d'].status) }}"
    assert [e.path for e in expressions(text) if e.parts] == [
        "steps.a.output.x",
        "input.y",
        "steps.b.output",
        "steps.c-d.status",
    ]
    assert references(text) == {"a", "b", "c-d"}


@pytest.mark.parametrize(
    "text",
    [
        "input.n > 1 and not (input.lang in ['en', \"fr\"] or input.draft)",
        "steps['a~1'].output.x | default(0) >= -2.5",
        "not not input.draft",
        "(input.a or input.b) | json",
        "[input.a, [1, null], 'x'] == input.c",
    ],
)
def test_to_text_round_trips(text: str) -> None:
    node = parse_expression(text)
    assert parse_expression(to_text(node)) == parse_expression(to_text(parse_expression(to_text(node))))
    scope = {"input": {"n": 2, "lang": "de", "draft": False, "a": 1, "b": 2, "c": [1, [1, None], "x"]}}
    scope["steps"] = {"a~1": {"output": {"x": -1}}}
    assert render("{{ " + to_text(node) + " }}", scope) == render("{{ " + text + " }}", scope)


def test_rewrite_paths_namespaces_step_references_and_keeps_text() -> None:
    def rename(parts: tuple[str | int, ...]) -> tuple[str | int, ...]:
        if parts[0] == "steps":
            return ("steps", f"sub/{parts[1]}", *parts[2:])
        return ("steps", "sub/_input", "output", *parts[1:])

    value = {"a": "Hi {{ input.name | upper }}!", "b": ["{{ steps.x.output.n > 2 and input.ok }}", 3]}
    assert rewrite_paths(value, rename) == {
        "a": 'Hi {{ steps["sub/_input"].output.name | upper }}!',
        "b": ['{{ (steps["sub/x"].output.n > 2) and steps["sub/_input"].output.ok }}', 3],
    }


def _violations(step: dict[str, Any], **top: Any) -> list[tuple[str, str]]:
    source = {
        "id": "w",
        "input": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": [{"id": "a", "kind": "tool", "tool": "echo"}, {"id": "b", "needs": ["a"], **step}],
        **top,
    }
    definition, violations = check_definition(source)
    assert definition is None
    return [(v.field, v.description) for v in violations]


def test_create_time_checks_name_the_field_of_each_bad_expression() -> None:
    found = _violations(
        {
            "kind": "tool",
            "tool": "echo",
            "when": "{{ input.n > 1 and input.m }}",
            "arguments": {"x": "{{ steps.a.output.v == }}", "y": ["{{ steps.zz.status == 'FAILED' }}"]},
        }
    )
    assert sorted(found) == [
        (
            "steps[1].arguments.x",
            "template syntax error: expected a value, found end of expression (at character 23)",
        ),
        ("steps[1].arguments.y[0]", "template 'steps.zz.status': unknown step 'zz'"),
        ("steps[1].when", "template 'input.m': input field 'm' is not declared"),
    ]


def test_valid_expressions_pass_the_checks() -> None:
    source = {
        "id": "w",
        "steps": [
            {"id": "a", "kind": "tool", "tool": "echo"},
            {
                "id": "b",
                "kind": "tool",
                "tool": "echo",
                "needs": ["a"],
                "when": "{{ steps.a.output.n >= 2 and input.mode in ['x', 'y'] }}",
            },
        ],
    }
    definition, violations = check_definition(source)
    assert violations == []
    assert definition is not None
