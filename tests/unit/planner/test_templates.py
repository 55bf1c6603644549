from __future__ import annotations

from typing import Any

import pytest
from agentflow_runtime.templates import TemplateError, expressions, references, render

SCOPE: dict[str, Any] = {
    "input": {"topic": "cats", "count": 3, "empty": None},
    "steps": {
        "fetch": {"output": {"items": [{"title": "First"}, {"title": "Second"}], "ok": True}},
        "word-count": {"output": {"words": 12}},
    },
}


def test_whole_expression_keeps_the_type() -> None:
    assert render("{{ input.count }}", SCOPE) == 3
    assert render("  {{ steps.fetch.output.items }} ", SCOPE) == [{"title": "First"}, {"title": "Second"}]
    assert render("{{ steps.fetch.output.ok }}", SCOPE) is True


def test_mixed_text_interpolates_strings_and_json() -> None:
    assert render("About {{ input.topic }}: {{ input.count }}", SCOPE) == "About cats: 3"
    assert render("x={{ steps.fetch.output.items[0] }}", SCOPE) == 'x={"title":"First"}'


def test_indexes_and_quoted_keys() -> None:
    assert render("{{ steps.fetch.output.items[1].title }}", SCOPE) == "Second"
    assert render("{{ steps.fetch.output.items[-1].title }}", SCOPE) == "Second"
    assert render('{{ steps["word-count"].output.words }}', SCOPE) == 12
    assert render("{{ steps.word-count.output.words }}", SCOPE) == 12


def test_render_walks_dicts_and_lists() -> None:
    value = {"a": ["{{ input.topic | upper }}", 5], "b": {"c": "{{ input.count }}"}, "d": None}
    assert render(value, SCOPE) == {"a": ["CATS", 5], "b": {"c": 3}, "d": None}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.topic | upper }}", "CATS"),
        ("{{ input.topic | upper | lower }}", "cats"),
        ("{{ input.topic | length }}", 4),
        ("{{ steps.fetch.output.items | length }}", 2),
        ("{{ steps.fetch.output.items[0] | json }}", '{"title":"First"}'),
        ("{{ input.topic | json }}", '"cats"'),
        ('{{ input.missing | default("none") }}', "none"),
        ("{{ input.empty | default(7) }}", 7),
        ("{{ input.missing | upper | default('x') }}", "x"),
        ("{{ input.topic | default('x') }}", "cats"),
        ("{{ 'literal' | upper }}", "LITERAL"),
    ],
)
def test_filters(template: str, expected: Any) -> None:
    assert render(template, SCOPE) == expected


def test_missing_path_names_the_path() -> None:
    with pytest.raises(TemplateError) as info:
        render("Hello {{ steps.fetch.output.items[5].title }}", SCOPE)
    assert info.value.path == "steps.fetch.output.items[5].title"
    assert "steps.fetch.output.items[5].title" in str(info.value)


@pytest.mark.parametrize(
    ("template", "position"),
    [
        ("abc {{ input.topic", 4),
        ("{{ }}", 3),
        ("{{ input. }}", 10),
        ("{{ input.topic | nope }}", 17),
        ("{{ input.topic | default }}", 17),
        ("{{ input.topic extra }}", 15),
        ("{{ input[1.5] }}", 9),
    ],
)
def test_syntax_errors_carry_a_position(template: str, position: int) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, SCOPE)
    assert info.value.position == position
    assert f"at character {position}" in str(info.value)


def test_filter_type_errors() -> None:
    with pytest.raises(TemplateError, match="expects a string"):
        render("{{ input.count | upper }}", SCOPE)
    with pytest.raises(TemplateError, match="length"):
        render("{{ input.count | length }}", SCOPE)


def test_no_evaluation_of_code() -> None:
    with pytest.raises(TemplateError):
        render("{{ __import__('os').system('true') }}", SCOPE)


def test_references_lists_step_ids() -> None:
    value = {
        "a": "{{ steps.one.output }} and {{ steps['two'].output.x | default(1) }}",
        "b": ["{{ input.topic }}", "{{ steps.three }}"],
        "c": 4,
    }
    assert references(value) == {"one", "two", "three"}
    assert references("no templates here") == set()


def test_expressions_expose_roots_and_paths() -> None:
    found = expressions("{{ input.topic }} {{ steps.a.output.items[0] | json }}")
    assert [e.root for e in found] == ["input", "steps"]
    assert [e.path for e in found] == ["input.topic", "steps.a.output.items[0]"]


def test_every_filter_the_parser_accepts_is_applied() -> None:
    """The parser's filter list (template_syntax) and the evaluator's (templates) name the same filters."""
    from agentflow_runtime.template_syntax import FILTER_ARITY

    args = {0: "", 1: "(0)"}
    for name, arity in FILTER_ARITY.items():
        assert render(f"{{{{ input.v | {name}{args[arity]} }}}}", {"input": {"v": "ab"}}) is not None, name
