"""Sub-workflows: inlined with namespaced ids, input through an input step, version pinned, cycles refused."""

from __future__ import annotations

from typing import Any

import pytest
from agentflow_planner.registry import WorkflowRegistry
from agentflow_planner.step_params import StepKind
from agentflow_runtime.errors import InvalidArgument
from agentflow_worker.model import RunState, StepState
from agentflow_worker.store import RunStore

from tests.unit.worker.conftest import FakeCalls

from .engine_support import run_plan, states, store

__all__ = ["store"]
TENANT = "acme"

INNER: dict[str, Any] = {
    "id": "inner",
    "input": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
    "steps": [
        {"id": "a", "kind": "tool", "tool": "word-count", "arguments": {"text": "{{ input.topic }}"}},
        {
            "id": "b",
            "kind": "model",
            "needs": ["a"],
            "prompt": "{{ input.topic }}: {{ steps.a.output.words }}",
        },
    ],
    "output": {"words": "{{ steps.a.output.words }}", "text": "{{ steps.b.output.text }}"},
}


def outer(ref: str = "inner", workflow_id: str = "outer", **step: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "steps": [
            {
                "id": "prep",
                "kind": "tool",
                "tool": "word-count",
                "arguments": {"text": "{{ input.subject }}"},
            },
            {
                "id": "research",
                "workflow": ref,
                "needs": ["prep"],
                "input": {"topic": "{{ input.subject }} ({{ steps.prep.output.words }})"},
                **step,
            },
            {
                "id": "report",
                "kind": "tool",
                "tool": "word-count",
                "needs": ["research"],
                "arguments": {"text": "{{ steps.research.output.text }}"},
            },
        ],
        "output": {"inner": "{{ steps.research.output }}"},
    }


async def test_a_sub_workflow_is_inlined_with_namespaced_ids_and_a_pinned_version(
    registry: WorkflowRegistry,
) -> None:
    await registry.create(TENANT, INNER)
    await registry.create(TENANT, outer())
    plan = await registry.compile(TENANT, "outer")
    by_id = {s.id: s for s in plan.steps}
    assert [s.id for s in plan.steps] == [
        "prep",
        "research/_input",
        "research/a",
        "research/b",
        "research",
        "report",
    ]
    assert by_id["research/_input"].kind is StepKind.VALUE
    assert by_id["research/_input"].needs == ("prep",)
    assert by_id["research/_input"].params == {
        "value": {"topic": "{{ input.subject }} ({{ steps.prep.output.words }})"},
        "workflow": "workflows/inner",
        "workflow_version": 1,
    }
    assert by_id["research/a"].needs == ("research/_input",)
    assert by_id["research/a"].params["arguments"] == {"text": '{{ steps["research/_input"].output.topic }}'}
    assert by_id["research/b"].needs == ("research/a",)
    assert by_id["research/b"].params["messages"][0]["content"] == (
        '{{ steps["research/_input"].output.topic }}: {{ steps["research/a"].output.words }}'
    )
    assert by_id["research"].needs == ("research/a", "research/b")
    assert by_id["research"].params == {
        "value": {
            "words": '{{ steps["research/a"].output.words }}',
            "text": '{{ steps["research/b"].output.text }}',
        },
        "join": "any",
    }

    # A new version of the inner workflow changes neither the stored outer plan nor an explicit pin.
    changed = {**INNER, "output": {"text": "{{ steps.b.output.text }}"}}
    await registry.update(TENANT, "inner", changed)
    assert (await registry.compile(TENANT, "outer")).plan_hash == plan.plan_hash
    await registry.create(TENANT, outer("inner@1", "outer-pinned"))
    await registry.create(TENANT, outer("inner", "outer-latest"))
    pinned = {s.id: s for s in (await registry.compile(TENANT, "outer-pinned")).steps}
    latest = {s.id: s for s in (await registry.compile(TENANT, "outer-latest")).steps}
    assert pinned["research/_input"].params["workflow_version"] == 1
    assert latest["research/_input"].params["workflow_version"] == 2
    assert latest["research"].params["value"] == {"text": '{{ steps["research/b"].output.text }}'}


async def test_the_inlined_plan_runs_on_the_engine(registry: WorkflowRegistry, store: RunStore) -> None:
    await registry.create(TENANT, INNER)
    await registry.create(TENANT, outer(when="{{ input.go }}"))
    plan = await registry.compile(TENANT, "outer")
    calls = FakeCalls()
    calls.script("prep", output={"words": 2})
    calls.script("research/a", output={"words": 4})
    run = await run_plan(store, calls, plan, {"subject": "tidal pools", "go": True})
    assert run.state is RunState.SUCCEEDED, run.error
    assert calls.params("research/a")["arguments"] == {"text": "tidal pools (2)"}
    assert calls.params("research/b")["messages"][0]["content"] == "tidal pools (2): 4"
    assert run.output == {"inner": {"words": 4, "text": "research/b-out"}}

    skipped = await run_plan(store, FakeCalls(), plan, {"subject": "x", "go": False})
    assert skipped.state is RunState.SUCCEEDED
    assert {sid for sid, st in states(skipped).items() if st is StepState.SKIPPED} == {
        "research/_input",
        "research/a",
        "research/b",
        "research",
        "report",
    }


async def test_nested_sub_workflows_nest_their_ids(registry: WorkflowRegistry) -> None:
    await registry.create(TENANT, INNER)
    await registry.create(TENANT, outer())
    top = {"id": "top", "steps": [{"id": "all", "workflow": "outer", "input": {"subject": "{{ input.s }}"}}]}
    await registry.create(TENANT, top)
    ids = [s.id for s in (await registry.compile(TENANT, "top")).steps]
    assert "all/research/a" in ids and "all/research/_input" in ids and ids[-1] == "all"


async def test_every_problem_with_sub_workflows_is_a_violation(registry: WorkflowRegistry) -> None:
    await registry.create(TENANT, INNER)
    await registry.create(TENANT, outer())
    steps: list[dict[str, Any]] = [
        {"id": "ghost", "workflow": "nothing-here"},
        {"id": "old", "workflow": "inner@7", "input": {"topic": "x"}},
        {"id": "bare", "workflow": "inner"},
        {"id": "self", "workflow": "bad"},
        {"id": "retried", "workflow": "inner", "input": {"topic": "x"}, "retry": {"max_attempts": 2}},
        {"id": "syntax", "workflow": "Inner@x"},
    ]
    bad = {"id": "bad", "steps": steps}
    with pytest.raises(InvalidArgument) as info:
        await registry.create(TENANT, bad)
    assert sorted(info.value.violations) == [
        ("steps[5].workflow", "must be a workflow id, with an optional version: <id> or <id>@<version>"),
    ]
    del steps[5]
    with pytest.raises(InvalidArgument) as info:
        await registry.create(TENANT, bad)
    assert sorted(info.value.violations) == [
        ("steps[0].workflow", "workflow 'nothing-here' does not exist"),
        ("steps[1].workflow", "workflow 'inner' has no version 7"),
        ("steps[2].input", "missing 'topic', required by workflow 'inner'"),
        ("steps[3].workflow", "a cycle: bad -> bad"),
        ("steps[4].retry", "not supported on a sub-workflow step; set it on its inner steps"),
    ]
    # inner -> outer -> inner: refused, and inner keeps its one version.
    looping = {
        **INNER,
        "steps": [*INNER["steps"], {"id": "again", "workflow": "outer", "input": {"subject": "x"}}],
    }
    with pytest.raises(InvalidArgument) as info:
        await registry.update(TENANT, "inner", looping)
    assert info.value.violations == [("steps[2].workflow", "a cycle: inner -> outer@1 -> ... -> inner")]
    assert (await registry.get(TENANT, "inner")).version == 1


async def test_validate_reports_sub_workflow_problems_without_storing(registry: WorkflowRegistry) -> None:
    checked = await registry.validate(TENANT, outer())
    assert checked.plan is None
    assert [(v.field, v.description) for v in checked.violations] == [
        ("steps[1].workflow", "workflow 'inner' does not exist")
    ]
