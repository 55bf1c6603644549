"""bt workflows: composites and decorators compiled to plan steps, run on the real engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agentflow_planner.definition import check_definition
from agentflow_planner.registry import validate
from agentflow_worker.engine import RunEngine
from agentflow_worker.model import Plan, RunState, StepState
from agentflow_worker.store import RunStore

from tests.unit.worker.conftest import SAFETY, FakeCalls, Notes, create_run

from .engine_support import compiled, run_plan, states, store

__all__ = ["store"]

UNAVAILABLE = {"code": "UNAVAILABLE", "message": "down", "reason": "DOWN", "metadata": {}}


def tool(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "tool", "tool": "word-count", "arguments": {"text": step_id}, **extra}


def fetch_or_fallback() -> dict[str, Any]:
    return {
        "id": "fetcher",
        "kind": "bt",
        "root": {
            "sequence": [
                tool("prepare"),
                {
                    "id": "get",
                    "selector": [
                        {"condition": "{{ input.cached }}"},
                        {"retry": {"max_attempts": 2}, "timeout": 5, "do": tool("primary")},
                        tool("fallback", arguments={"text": "{{ steps.prepare.output.text }}"}),
                    ],
                },
                {"parallel": [tool("left"), tool("right")], "success": "all"},
            ]
        },
        "output": {"fallback": "{{ steps.fallback.output | default(null) }}"},
    }


def test_composites_become_value_steps_and_decorators_the_leaf_policy() -> None:
    plan = compiled(fetch_or_fallback())
    by_id = {s.id: s for s in plan.steps}
    assert set(by_id) == {
        "prepare",
        "condition@1.0",
        "primary",
        "fallback",
        "get",
        "left",
        "right",
        "parallel@2",
        "sequence@root",
    }
    primary = by_id["primary"].params
    assert primary["retry"]["max_attempts"] == 2 and primary["timeout_seconds"] == 5
    assert primary["on_error"] == "continue"
    assert primary["when"] == '{{ steps["condition@1.0"].status == "FAILED" }}'
    assert by_id["condition@1.0"].needs == ("prepare",)
    assert by_id["condition@1.0"].params["when"] == '{{ steps["prepare"].status == "SUCCEEDED" }}'
    assert by_id["get"].params["require"] == (
        '{{ (steps["condition@1.0"].status == "SUCCEEDED") or (steps["primary"].status == "SUCCEEDED") '
        'or (steps["fallback"].status == "SUCCEEDED") }}'
    )
    assert "on_error" not in by_id["get"].params  # no selector above it: its failure fails the run
    assert by_id["left"].needs == by_id["right"].needs == ("get",)
    assert by_id["sequence@root"].needs == ("get", "parallel@2", "prepare")


async def test_a_selector_tries_children_in_order_until_one_succeeds(store: RunStore) -> None:
    calls = FakeCalls()
    calls.script("primary", fail=UNAVAILABLE)
    run = await run_plan(store, calls, compiled(fetch_or_fallback()), {"cached": False})
    assert run.state is RunState.SUCCEEDED, run.error
    assert calls.attempts[:4] == [("prepare", 1), ("primary", 1), ("primary", 2), ("fallback", 1)]
    assert calls.params("fallback")["arguments"] == {"text": "prepare-out"}
    assert states(run)["condition@1.0"] is StepState.FAILED
    assert states(run)["primary"] is StepState.FAILED
    assert states(run)["get"] is StepState.SUCCEEDED
    assert sorted(calls.called()[4:]) == ["left", "right"]
    assert run.output == {"fallback": {"text": "fallback-out"}}


async def test_a_true_condition_short_circuits_the_selector(store: RunStore) -> None:
    calls = FakeCalls()
    run = await run_plan(store, calls, compiled(fetch_or_fallback()), {"cached": True})
    assert run.state is RunState.SUCCEEDED, run.error
    assert sorted(calls.called()) == ["left", "prepare", "right"]
    assert states(run)["primary"] is StepState.SKIPPED
    assert states(run)["fallback"] is StepState.SKIPPED
    assert run.output == {"fallback": None}


async def test_a_selector_whose_children_all_fail_fails_the_tree(store: RunStore) -> None:
    calls = FakeCalls()
    calls.script("primary", fail=UNAVAILABLE)
    calls.script("fallback", fail={**UNAVAILABLE, "code": "INTERNAL"})
    run = await run_plan(store, calls, compiled(fetch_or_fallback()), {"cached": False})
    assert run.state is RunState.FAILED
    assert run.error is not None and "the selector failed" in run.error["message"]
    assert "left" not in calls.called()


async def test_a_failure_outside_any_selector_fails_the_run(store: RunStore) -> None:
    calls = FakeCalls()
    calls.script("right", fail={**UNAVAILABLE, "code": "INTERNAL"})
    run = await run_plan(store, calls, compiled(fetch_or_fallback()), {"cached": True})
    assert run.state is RunState.FAILED
    assert run.error is not None and run.error["code"] == "INTERNAL"


async def test_a_parallel_that_needs_one_success_tolerates_the_others(store: RunStore) -> None:
    definition = {
        "id": "race",
        "kind": "bt",
        "root": {"parallel": [tool("a"), tool("b")], "success": "one"},
        "output": {"b": "{{ steps.b.status }}", "error": "{{ steps.a.error.code }}"},
    }
    calls = FakeCalls()
    calls.script("a", fail=UNAVAILABLE)
    run = await run_plan(store, calls, compiled(definition))
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.output == {"b": "SUCCEEDED", "error": "UNAVAILABLE"}


def test_every_problem_is_listed_at_once() -> None:
    definition = {
        "id": "bad-tree",
        "kind": "bt",
        "root": {
            "sequence": [
                {"kind": "tool", "tool": "word-count"},
                tool("dup"),
                tool("dup"),
                {"selector": []},
                {"retry": {"max_attempts": 2}, "do": {"sequence": [tool("x")]}},
                {"parallel": [tool("p")], "success": "most"},
                {"kind": "widget", "id": "w"},
                tool("late", needs=["dup"], arguments={"text": "{{ steps.after.output }}"}),
                tool("after"),
                "nonsense",
            ]
        },
    }
    _, violations = check_definition(definition)
    assert {(v.field, v.description) for v in violations} == {
        ("root.sequence[0].id", "a leaf step needs an `id`"),
        ("root.sequence[2].id", "duplicate id 'dup' (first used at root.sequence[1])"),
        ("root.sequence[3].selector", "must be a non-empty list of nodes"),
        (
            "root.sequence[4].do",
            "retry and timeout decorators wrap a leaf step, not a composite or a condition",
        ),
        ("root.sequence[5].success", "must be one of all, one"),
        (
            "root.sequence[6].kind",
            "unknown step kind 'widget' (known: model, tool, memory, agent, value, workflow)",
        ),
        ("root.sequence[7].needs", "not allowed in a behavior tree (the tree's shape decides it)"),
        (
            "root.sequence[7].arguments.text",
            "template 'steps.after.output': step 'after' is not upstream; a tree node reads only the steps "
            "that run before it",
        ),
        ("root.sequence[9]", "must be an object: a composite, a condition, a decorator or a leaf step"),
    }


def test_templates_may_read_only_steps_that_ran_before() -> None:
    definition = {
        "id": "order",
        "kind": "bt",
        "root": {
            "sequence": [
                tool("first", arguments={"text": "{{ steps.second.output.text }}"}),
                tool("second", arguments={"text": "{{ steps.first.output.text }}"}),
                {"condition": "{{ steps.nothing.output }}"},
            ]
        },
    }
    _, violations = check_definition(definition)
    assert {(v.field, v.description) for v in violations} == {
        (
            "root.sequence[0].arguments.text",
            "template 'steps.second.output.text': step 'second' is not upstream; a tree node reads only the "
            "steps that run before it",
        ),
        ("root.sequence[2].condition", "template 'steps.nothing.output': unknown step 'nothing'"),
    }


def test_agent_problems_name_the_leaf() -> None:
    definition = fetch_or_fallback()
    definition["root"]["sequence"][0] = {"id": "prepare", "kind": "agent", "agent": "nobody", "input": "hi"}
    checked = validate(definition)
    assert [(v.field, v.description) for v in checked.violations] == [
        ("root.sequence[0].agent", "unknown agent 'nobody' (catalog agents: none)")
    ]


async def test_a_resumed_run_keeps_a_tolerated_failure_as_an_outcome(store: RunStore) -> None:
    """A crash after the selector's first child failed: the new worker neither fails the run nor calls the
    failed child again, and later steps still read its status and error from the journal."""
    definition = fetch_or_fallback()
    definition["output"] = {"primary": "{{ steps.primary.status }}", "code": "{{ steps.primary.error.code }}"}
    plan = Plan.from_json(compiled(definition).to_dict())
    run = await create_run(store, plan, run_input={"cached": False})
    assert await store.claim(run.run_id, "w1", 600)
    fresh = await store.get(run.run_id)
    assert fresh is not None
    first = FakeCalls()
    first.script("primary", fail={**UNAVAILABLE, "code": "INTERNAL"})
    first.script("fallback", gate=asyncio.Event())  # never released: the worker "crashes" here
    task = asyncio.create_task(RunEngine(store, first, "w1", Notes()).execute(fresh))
    await first.wait_started("fallback")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, SAFETY)
    journaled = await store.get(run.run_id)
    assert journaled is not None and states(journaled)["primary"] is StepState.FAILED

    second = FakeCalls()
    state = await asyncio.wait_for(RunEngine(store, second, "w1", Notes()).execute(journaled), SAFETY)
    assert state is RunState.SUCCEEDED
    assert "primary" not in second.called() and "prepare" not in second.called()
    assert sorted(second.called()) == ["fallback", "left", "right"]
    final = await store.get(run.run_id)
    assert final is not None and final.output == {"primary": "FAILED", "code": "INTERNAL"}
