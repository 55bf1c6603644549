"""fsm workflows: validation (every problem at once), bounded unrolling, and what the engine does with it."""

from __future__ import annotations

from typing import Any

from agentflow_planner.definition import check_definition
from agentflow_planner.registry import validate
from agentflow_planner.step_params import StepKind
from agentflow_worker.model import Plan, RunState, StepState
from agentflow_worker.replay import Verdict, replay
from agentflow_worker.store import RunStore

from tests.unit.worker.conftest import FakeCalls

from .engine_support import compiled, run_plan, states, store

__all__ = ["store"]


def review_loop(**changes: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "id": "review-loop",
        "kind": "fsm",
        "initial": "draft",
        "terminal": ["done"],
        "max_transitions": 4,
        "states": {
            "draft": {
                "kind": "model",
                "prompt": "Draft about {{ input.topic }}",
                "transitions": [{"to": "review"}],
            },
            "review": {
                "kind": "tool",
                "tool": "word-count",
                "arguments": {"text": "{{ states.draft.output.text }}"},
                "transitions": [
                    {"to": "done", "when": "{{ states.review.output.words >= 5 }}"},
                    {"to": "draft"},
                ],
            },
            "done": {"value": "{{ states.draft.output.text }}"},
        },
        "output": {"text": "{{ states.done.output }}", "words": "{{ states.review.output.words }}"},
    }
    definition.update(changes)
    return definition


def test_unrolls_into_stable_visit_ids_with_guards_as_conditions() -> None:
    plan = compiled(review_loop())
    by_id = {s.id: s for s in plan.steps}
    assert [s.id for s in plan.steps] == [
        "draft~0",
        "review~1",
        "done~2",
        "draft~2",
        "review~3",
        "done~4",
        "draft~4",
        "fsm~end",
    ]
    assert by_id["draft~0"].needs == () and "when" not in by_id["draft~0"].params
    assert by_id["done~2"].needs == ("review~1",)
    assert by_id["done~2"].params["when"] == (
        '{{ (steps["review~1"].status != "SKIPPED" and (states.review.output.words >= 5)) }}'
    )
    # The second transition is taken only when the first guard does not hold.
    assert by_id["draft~2"].params["when"] == (
        '{{ (steps["review~1"].status != "SKIPPED" and not (states.review.output.words >= 5)) }}'
    )
    assert by_id["done~4"].kind is StepKind.VALUE
    assert by_id["fsm~end"].params["join"] == "any"
    assert set(by_id["fsm~end"].needs) == set(by_id) - {"fsm~end"}


def test_a_state_reached_from_two_states_joins_any() -> None:
    plan = compiled(
        {
            "id": "join",
            "kind": "fsm",
            "initial": "a",
            "terminal": ["end"],
            "max_transitions": 2,
            "states": {
                "a": {"transitions": [{"to": "b", "when": "{{ input.x }}"}, {"to": "c"}]},
                "b": {"transitions": [{"to": "end"}]},
                "c": {"transitions": [{"to": "end"}]},
                "end": {},
            },
        }
    )
    end = next(s for s in plan.steps if s.id == "end~2")
    assert end.needs == ("b~1", "c~1")
    assert end.params["join"] == "any"
    assert end.params["when"] == (
        '{{ (steps["b~1"].status != "SKIPPED") or (steps["c~1"].status != "SKIPPED") }}'
    )


async def test_the_engine_walks_one_state_per_visit_and_reads_the_latest_visit(
    store: RunStore,
) -> None:
    calls = FakeCalls()
    calls.script("draft~0", output={"text": "short"})
    calls.script("review~1", output={"words": 1})
    calls.script("draft~2", output={"text": "a much longer second draft"})
    calls.script("review~3", output={"words": 5})
    run = await run_plan(store, calls, compiled(review_loop()), {"topic": "tides"})
    assert run.state is RunState.SUCCEEDED, run.error
    assert calls.called() == ["draft~0", "review~1", "draft~2", "review~3"]
    assert calls.params("review~3")["arguments"] == {"text": "a much longer second draft"}
    assert states(run) == {
        "draft~0": StepState.SUCCEEDED,
        "review~1": StepState.SUCCEEDED,
        "done~2": StepState.SKIPPED,
        "draft~2": StepState.SUCCEEDED,
        "review~3": StepState.SUCCEEDED,
        "done~4": StepState.SUCCEEDED,
        "draft~4": StepState.SKIPPED,
        "fsm~end": StepState.SUCCEEDED,
    }
    assert run.output == {"text": "a much longer second draft", "words": 5}


async def test_running_out_of_transitions_fails_the_run_with_the_bound(store: RunStore) -> None:
    calls = FakeCalls()
    for step_id in ("review~1", "review~3"):
        calls.script(step_id, output={"words": 1})
    run = await run_plan(store, calls, compiled(review_loop()), {"topic": "tides"})
    assert run.state is RunState.FAILED
    assert run.error is not None and "max_transitions (4)" in run.error["message"]
    assert states(run)["draft~4"] is StepState.SUCCEEDED
    assert states(run)["fsm~end"] is StepState.FAILED


def test_every_problem_is_listed_at_once() -> None:
    definition = {
        "id": "broken",
        "kind": "fsm",
        "initial": "start",
        "terminal": ["finish", "nowhere"],
        "states": {
            "start": {
                "kind": "tool",
                "tool": "word-count",
                "needs": ["x"],
                "arguments": {"text": "{{ steps.a.output }} {{ states.ghost.output }}"},
                "transitions": [{"to": "middle"}, {"to": "finish", "when": "{{ input.x }} and more"}],
            },
            "middle": {"transitions": [{"to": "limbo"}]},
            "orphan": {"transitions": [{"to": "finish"}]},
            "stuck": {"kind": "model", "prompt": "hi"},
            "finish": {"transitions": [{"to": "start"}]},
            "Bad Name": {},
        },
        "steps": [],
    }
    result, violations = check_definition(definition)
    assert result is None
    found = {(v.field, v.description) for v in violations}
    assert found == {
        (
            "steps",
            "unknown field for a `fsm` workflow (allowed: description, display_name, id, initial, input, "
            "kind, max_transitions, output, states, terminal)",
        ),
        ("states.Bad Name", "a state name is lowercase letters, digits, '_' or '-', starting with a letter"),
        ("terminal[1]", "unknown state 'nowhere'"),
        ("max_transitions", "is required: the most transitions a run may take (1-100)"),
        ("states.start.needs", "not allowed on an fsm state (guards go on transitions)"),
        (
            "states.start.arguments.text",
            "template 'steps.a.output': unknown root 'steps' (use one of input, states)",
        ),
        ("states.start.arguments.text", "template 'states.ghost.output': unknown state 'ghost'"),
        ("states.start.transitions[1]", "never taken: an earlier transition has no guard"),
        ("states.start.transitions[1].when", "a guard must be a boolean or exactly one '{{ expression }}'"),
        ("states.middle.transitions[0].to", "unknown target state 'limbo'"),
        ("states.stuck", "a dead end: give it transitions or list it in `terminal`"),
        ("states.finish.transitions", "a terminal state has no transitions"),
        ("states.orphan", "unreachable from the initial state 'start'"),
        ("states.stuck", "unreachable from the initial state 'start'"),
    }


def test_unreachable_states_and_bounds_are_reported() -> None:
    definition = {
        "id": "far",
        "kind": "fsm",
        "initial": "a",
        "terminal": ["d"],
        "max_transitions": 2,
        "states": {
            "a": {"transitions": [{"to": "b"}]},
            "b": {"transitions": [{"to": "c"}]},
            "c": {"transitions": [{"to": "d"}]},
            "d": {},
            "island": {"transitions": [{"to": "d"}]},
        },
    }
    _, violations = check_definition(definition)
    assert {(v.field, v.description) for v in violations} == {
        ("states.d", "first reachable after 3 transitions, beyond max_transitions (2)"),
        ("states.island", "unreachable from the initial state 'a'"),
        ("terminal", "no terminal state is reachable within max_transitions (2)"),
    }


def test_missing_pieces_are_all_reported() -> None:
    _, violations = check_definition({"id": "empty", "kind": "fsm"})
    assert {v.field for v in violations} == {"states", "initial", "terminal", "max_transitions"}


async def test_replay_of_a_looped_run_matches_its_journal(store: RunStore) -> None:
    calls = FakeCalls()
    calls.script("draft~0", output={"text": "short"})
    calls.script("review~1", output={"words": 1})
    calls.script("draft~2", output={"text": "a much longer second draft"})
    calls.script("review~3", output={"words": 5})
    plan = compiled(review_loop())
    run = await run_plan(store, calls, plan, {"topic": "tides"})
    assert run.state is RunState.SUCCEEDED
    # review~1 read the first draft: replayed with every visit journaled, it must still see that one.
    report = replay(run, Plan.from_json(plan.to_dict()), await store.input_digests(run.run_id))
    assert report.matches, report
    changed = review_loop()
    changed["states"]["review"]["arguments"] = {"text": "{{ states.draft.output.text | upper }}"}
    drift = replay(run, Plan.from_json(compiled(changed).to_dict()), await store.input_digests(run.run_id))
    assert not drift.matches
    assert {v.step_id for v in drift.steps if v.verdict is Verdict.INPUT_CHANGED} == {"review~1", "review~3"}


def test_agent_problems_name_the_state_once() -> None:
    definition = review_loop()
    definition["states"]["draft"] = {
        "kind": "agent",
        "agent": "nobody",
        "input": "hi",
        "transitions": [{"to": "review"}],
    }
    checked = validate(definition)
    assert [(v.field, v.description) for v in checked.violations] == [
        ("states.draft.agent", "unknown agent 'nobody' (catalog agents: none)")
    ]
