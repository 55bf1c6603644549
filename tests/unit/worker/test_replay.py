"""Replay compares a journal with a plan, calling nothing; every kind of drift is named."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agentflow_runtime.protojson import utcnow
from agentflow_worker.inputs import input_digest
from agentflow_worker.model import Plan, PlanStep, RunRecord, RunState, StepRecord, StepState
from agentflow_worker.replay import Verdict, replay

PLAN = Plan(
    workflow="workflows/w",
    workflow_version=1,
    plan_hash="h1",
    steps=(
        PlanStep("a", "model", (), {"prompt": "about {{ input.topic }}"}),
        PlanStep(
            "b", "tool", ("a",), {"tool": "word-count", "arguments": {"text": "{{ steps.a.output.text }}"}}
        ),
        PlanStep("c", "memory", ("a",), {"op": "put", "text": "{{ steps.a.output.text }}"}),
    ),
)


def finished_run(plan: Plan = PLAN) -> tuple[RunRecord, dict[str, str]]:
    outputs: dict[str, Any] = {"a": {"text": "tides"}, "b": {"words": 1}}
    run = RunRecord(
        run_id="r1",
        tenant="acme",
        workflow="workflows/w",
        workflow_version=1,
        plan_hash=plan.plan_hash,
        plan=plan,
        state=RunState.FAILED,
        input={"topic": "moon"},
        labels={},
        create_time=utcnow(),
        steps=[
            StepRecord("a", "model", StepState.SUCCEEDED, output=outputs["a"]),
            StepRecord("b", "tool", StepState.SUCCEEDED, output=outputs["b"]),
            StepRecord("c", "memory", StepState.FAILED),
        ],
    )
    digests = {
        "a": input_digest({"prompt": "about moon"}),
        "b": input_digest({"tool": "word-count", "arguments": {"text": "tides"}}),
    }
    return run, digests


def test_the_same_plan_matches() -> None:
    run, digests = finished_run()
    report = replay(run, PLAN, digests)
    assert report.matches
    assert [(s.step_id, s.verdict) for s in report.steps] == [
        ("a", Verdict.MATCH),
        ("b", Verdict.MATCH),
        ("c", Verdict.NOT_RUN),  # it failed: no journaled input to compare
    ]


def test_every_kind_of_drift_is_named() -> None:
    run, digests = finished_run()
    changed = Plan(
        workflow="workflows/w",
        workflow_version=2,
        plan_hash="h2",
        steps=(
            PlanStep("a", "model", (), {"prompt": "regarding {{ input.topic }}"}),  # template changed
            PlanStep("b", "memory", ("a",), {"op": "get", "memory_id": "x"}),  # kind changed
            PlanStep("d", "tool", ("a",), {"tool": "word-count"}),  # new
        ),
    )
    report = replay(run, changed, digests)
    assert not report.matches
    assert report.replayed_workflow_version == 2
    assert {s.step_id: s.verdict for s in report.steps} == {
        "a": Verdict.INPUT_CHANGED,
        "b": Verdict.KIND_CHANGED,
        "d": Verdict.ADDED,
        "c": Verdict.REMOVED,
    }


def test_upstream_wiring_change_is_caught_even_with_the_same_params() -> None:
    run, digests = finished_run()
    rewired = replace(
        PLAN,
        plan_hash="h3",
        steps=(
            PLAN.steps[0],
            PlanStep("b", "tool", ("a",), {"tool": "word-count", "arguments": {"text": "{{ input.topic }}"}}),
            PLAN.steps[2],
        ),
    )
    report = replay(run, rewired, digests)
    assert {s.step_id: s.verdict for s in report.steps}["b"] is Verdict.INPUT_CHANGED


def test_a_plan_hash_change_alone_does_not_match() -> None:
    run, digests = finished_run()
    report = replay(run, replace(PLAN, plan_hash="other", output={"x": 1}), digests)
    assert all(s.verdict in (Verdict.MATCH, Verdict.NOT_RUN) for s in report.steps)
    assert not report.matches
