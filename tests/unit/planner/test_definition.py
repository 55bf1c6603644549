from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agentflow_planner.definition import DefinitionError, check_definition, parse_definition
from agentflow_planner.step_params import StepKind

DEMO = Path(__file__).resolve().parents[3] / "catalog" / "workflows" / "demo.yaml"


def fields(source: str | dict[str, Any]) -> dict[str, str]:
    definition, violations = check_definition(source)
    assert definition is None
    return {v.field: v.description for v in violations}


def test_demo_catalog_workflow_is_valid() -> None:
    definition = parse_definition(DEMO.read_text())
    assert definition.id == "demo"
    assert [s.id for s in definition.steps] == ["draft", "wordcount", "remember", "recall"]
    assert [s.kind for s in definition.steps] == [
        StepKind.MODEL,
        StepKind.TOOL,
        StepKind.MEMORY,
        StepKind.MEMORY,
    ]


def test_yaml_and_json_sources_agree() -> None:
    yaml_def = parse_definition(DEMO.read_text())
    json_def = parse_definition(json.dumps(yaml_def.document))
    dict_def = parse_definition(yaml_def.document)
    assert yaml_def == json_def == dict_def


def test_every_problem_is_reported() -> None:
    problems = fields(
        """
id: Bad_Id
kind: tree
extra: 1
input: {properties: {topic: {type: string}}, required: [topic, ghost]}
steps:
  - {id: a, kind: model, prompt: "{{ input.nope }}", needs: [x]}
  - {id: a, kind: tool}
  - {id: c, kind: widget}
  - {id: d, kind: memory, op: put}
  - {id: e, kind: memory, op: get, text: hi}
  - {id: f, kind: model, prompt: p, messages: [{role: user, content: q}]}
  - {id: g, kind: model, prompt: "{{ steps.f.output.text }}", max_tokens: -1, temperature: 5}
output: "{{ steps.zz.output | bogus }}"
"""
    )
    assert problems == {
        "extra": problems["extra"],
        "id": problems["id"],
        "kind": "unknown workflow kind 'tree' (known: dag, sequential, fsm, bt)",
        "input.required[1]": "'ghost' is not in input.properties",
        "steps[1].id": "duplicate step id 'a' (first used by steps[0])",
        "steps[0].needs[0]": "unknown step 'x'",
        "steps[0].prompt": "template 'input.nope': input field 'nope' is not declared",
        "steps[1].tool": "a tool step needs `tool`, the name of a registered tool",
        "steps[2].kind": "unknown step kind 'widget' (known: model, tool, memory, agent, value, workflow)",
        "steps[3].text": "a memory put step needs `text`",
        "steps[4].memory_id": "a memory get step needs `memory_id`",
        "steps[4].text": problems["steps[4].text"],
        "steps[5].prompt": "a model step needs exactly one of `prompt` or `messages`",
        "steps[6].prompt": "template 'steps.f.output.text': step 'f' is not upstream; add it to `needs`",
        "steps[6].max_tokens": "must be at least 1",
        "steps[6].temperature": "must be a number from 0 to 2",
        "output": problems["output"],
    }
    assert "unknown field" in problems["extra"]
    assert "unknown field for a memory get step" in problems["steps[4].text"]
    assert "unknown filter 'bogus'" in problems["output"]


def test_cycles_are_detected() -> None:
    problems = fields(
        {
            "id": "loop",
            "steps": [
                {"id": "a", "kind": "tool", "tool": "t", "needs": ["c"]},
                {"id": "b", "kind": "tool", "tool": "t", "needs": ["a"]},
                {"id": "c", "kind": "tool", "tool": "t", "needs": ["b"]},
                {"id": "d", "kind": "tool", "tool": "t", "needs": ["d"]},
            ],
        }
    )
    assert problems == {
        "steps[0].needs": "dependency cycle: a -> c -> b -> a",
        "steps[3].needs[0]": "a step cannot need itself",
    }


def test_template_may_read_transitive_needs() -> None:
    definition = parse_definition(
        {
            "id": "chain",
            "steps": [
                {"id": "a", "kind": "model", "prompt": "start"},
                {"id": "b", "kind": "model", "prompt": "{{ steps.a.output.text }}", "needs": ["a"]},
                {
                    "id": "c",
                    "kind": "tool",
                    "tool": "t",
                    "needs": ["b"],
                    "arguments": {"x": "{{ steps.a.output }}"},
                },
            ],
        }
    )
    assert definition.steps[2].needs == ("b",)


def test_sequential_adds_implicit_needs() -> None:
    definition = parse_definition(
        {
            "id": "seq",
            "kind": "sequential",
            "steps": [
                {"id": "one", "kind": "model", "prompt": "hi"},
                {"id": "two", "kind": "model", "prompt": "{{ steps.one.output.text }}"},
                {"id": "three", "kind": "memory", "op": "query", "text": "{{ steps.two.output.text }}"},
            ],
        }
    )
    assert [s.needs for s in definition.steps] == [(), ("one",), ("two",)]


def test_model_params_are_normalised() -> None:
    definition = parse_definition(
        {
            "id": "m",
            "steps": [{"id": "a", "kind": "model", "system": "be brief", "prompt": "hi", "max_tokens": 9.0}],
        }
    )
    assert definition.steps[0].params == {
        "model": "local",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 9,
    }


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("id: [unclosed", "source"),
        ("- just\n- a list", "source"),
        ("id: x\nsteps: []", "steps"),
        ("id: x\nwhen: 2024-01-01\nsteps: [{id: a, kind: model, prompt: p}]", "when"),
    ],
)
def test_bad_documents(source: str, field: str) -> None:
    assert field in fields(source)


def test_parse_definition_raises_with_all_violations() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definition({"steps": [{"id": "a"}]})
    assert {v.field for v in info.value.violations} == {"id", "steps[0].kind"}


def test_timeout_seconds_is_checked_and_kept_on_every_kind() -> None:
    from agentflow_planner.compiler import compile_plan
    from agentflow_planner.definition import check_definition

    good = {
        "id": "t",
        "steps": [{"id": "a", "kind": "tool", "tool": "word-count", "timeout_seconds": 5}],
    }
    definition, violations = check_definition(good)
    assert definition is not None and not violations
    assert compile_plan(definition).steps[0].params["timeout_seconds"] == 5
    bad = {"id": "t", "steps": [{"id": "a", "kind": "tool", "tool": "word-count", "timeout_seconds": -1}]}
    _, violations = check_definition(bad)
    assert [v.field for v in violations] == ["steps[0].timeout_seconds"]


def test_retry_is_checked_normalised_with_defaults_and_kept_in_params() -> None:
    from agentflow_planner.compiler import compile_plan
    from agentflow_planner.definition import check_definition

    step = {"id": "a", "kind": "tool", "tool": "word-count", "retry": {"max_attempts": 3, "jitter": 0}}
    definition, violations = check_definition({"id": "t", "steps": [step]})
    assert definition is not None and not violations
    assert compile_plan(definition).steps[0].params["retry"] == {
        "max_attempts": 3,
        "initial_backoff_seconds": 1.0,
        "max_backoff_seconds": 30.0,
        "multiplier": 2.0,
        "jitter": 0.0,
        "retry_on": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"],
    }
    bad_retry = {
        "max_attempts": 0,
        "jitter": 2,
        "retry_on": ["UNAVAILABLE", "SOMETIMES"],
        "initial_backoff_seconds": 5,
        "max_backoff_seconds": 1,
        "forever": True,
    }
    bad = {"id": "t", "steps": [{**step, "retry": bad_retry}]}
    _, violations = check_definition(bad)
    assert sorted(v.field for v in violations) == [
        "steps[0].retry.forever",
        "steps[0].retry.jitter",
        "steps[0].retry.max_attempts",
        "steps[0].retry.max_backoff_seconds",
        "steps[0].retry.retry_on",
    ]
    _, violations = check_definition({"id": "t", "steps": [{**step, "retry": 3}]})
    assert [v.field for v in violations] == ["steps[0].retry"]


def test_when_is_kept_and_its_references_must_be_upstream() -> None:
    from agentflow_planner.compiler import compile_plan
    from agentflow_planner.definition import check_definition

    ok = {
        "id": "w",
        "steps": [
            {"id": "a", "kind": "tool", "tool": "word-count"},
            {
                "id": "b",
                "kind": "tool",
                "tool": "word-count",
                "needs": ["a"],
                "when": "{{ steps.a.output.words }}",
            },
        ],
    }
    definition, violations = check_definition(ok)
    assert definition is not None and not violations
    assert compile_plan(definition).steps[1].params["when"] == "{{ steps.a.output.words }}"
    not_upstream = {
        "id": "w",
        "steps": [
            {"id": "a", "kind": "tool", "tool": "word-count", "when": "{{ steps.b.output.words }}"},
            {"id": "b", "kind": "tool", "tool": "word-count"},
        ],
    }
    _, violations = check_definition(not_upstream)
    assert any(v.field.startswith("steps[0].when") for v in violations), violations
    bad = {"id": "w", "steps": [{"id": "a", "kind": "tool", "tool": "word-count", "when": 3}]}
    _, violations = check_definition(bad)
    assert [v.field for v in violations] == ["steps[0].when"]
