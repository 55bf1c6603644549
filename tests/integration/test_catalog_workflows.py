"""The catalog example workflows, run end to end through the REST edge by a user of tenant `default`."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings


def run_to_end(
    edge: str, token: str, workflow: str, run_input: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    run = httpx.post(
        f"{edge}/v1/runs", headers=headers, json={"workflow": workflow, "input": run_input}, timeout=30
    )
    assert run.status_code == 200, run.text
    name = run.json()["name"]
    with httpx.stream("GET", f"{edge}/v1/{name}:watch", headers=headers, timeout=120) as stream:
        events = [orjson.loads(line)["result"] for line in stream.iter_lines() if line.strip()]
    return httpx.get(f"{edge}/v1/{name}", headers=headers, timeout=30).json(), events


@pytest.mark.parametrize("critique", [False, True])
def test_fan_out_fan_in_with_an_optional_branch(edge: str, settings: Settings, critique: bool) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    final, events = run_to_end(edge, token, "workflows/fan-out", {"topic": "tides", "critique": critique})
    assert final["state"] == "RUN_STATE_SUCCEEDED", final
    steps = {s["stepId"]: s["state"] for s in final["steps"]}
    assert steps["report"] == "STEP_STATE_SUCCEEDED"
    assert steps["critique"] == ("STEP_STATE_SUCCEEDED" if critique else "STEP_STATE_SKIPPED")
    # Fan-in: the report starts only after all three branches succeeded.
    seq = {(e["type"], e.get("stepId")): int(e["seq"]) for e in events}
    report_start = seq[("RUN_EVENT_TYPE_STEP_STARTED", "report")]
    for branch in ("count", "remember", "headline"):
        assert seq[("RUN_EVENT_TYPE_STEP_SUCCEEDED", branch)] < report_start
    assert final["output"]["words"] > 0
    assert (final["output"]["critique"] == "not requested") is (not critique)


def visited(final: dict[str, Any]) -> list[str]:
    """The steps that ran (succeeded or failed), in the plan's order."""
    return [
        s["stepId"] for s in final["steps"] if s["state"] in ("STEP_STATE_SUCCEEDED", "STEP_STATE_FAILED")
    ]


def test_fsm_loops_through_its_states_until_a_guard_lets_it_publish(edge: str, settings: Settings) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    direct, _ = run_to_end(edge, token, "workflows/fsm-review", {"topic": "tides", "min_words": 1})
    assert direct["state"] == "RUN_STATE_SUCCEEDED", direct
    assert visited(direct) == ["write~0", "review~1", "publish~2", "fsm~end"]
    first_words = direct["output"]["words"]
    assert first_words == len(direct["output"]["text"].split())

    # One word more than the first version has: the guard fails once, the machine rewrites (the local model's
    # rewrite builds on the previous text, so it is longer) and publishes on the second review.
    looped, events = run_to_end(
        edge, token, "workflows/fsm-review", {"topic": "tides", "min_words": first_words + 1}
    )
    assert looped["state"] == "RUN_STATE_SUCCEEDED", looped
    assert visited(looped) == ["write~0", "review~1", "write~2", "review~3", "publish~4", "fsm~end"]
    assert looped["output"]["words"] > first_words
    skipped = {e["stepId"] for e in events if e["type"] == "RUN_EVENT_TYPE_STEP_SKIPPED"}
    assert {"publish~2", "write~4"} <= skipped


def test_fsm_that_runs_out_of_transitions_fails_with_the_bound(edge: str, settings: Settings) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    final, _ = run_to_end(edge, token, "workflows/fsm-review", {"topic": "tides", "min_words": 100_000})
    assert final["state"] == "RUN_STATE_FAILED", final
    assert "max_transitions (6)" in final["error"]["message"]
    assert visited(final)[-2:] == ["write~6", "fsm~end"]


@pytest.mark.parametrize("short", [False, True])
def test_bt_selector_falls_back_and_parallel_children_both_run(
    edge: str, settings: Settings, short: bool
) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    run_input = {"topic": "tides", "min_chars": 100_000 if short else 1}
    final, events = run_to_end(edge, token, "workflows/bt-summary", run_input)
    assert final["state"] == "RUN_STATE_SUCCEEDED", final
    steps = {s["stepId"]: s["state"] for s in final["steps"]}
    # The condition fails (a short draft) -> the selector tries the expansion, which succeeds.
    assert steps["keep"] == ("STEP_STATE_FAILED" if short else "STEP_STATE_SUCCEEDED")
    assert steps["expand"] == ("STEP_STATE_SUCCEEDED" if short else "STEP_STATE_SKIPPED")
    assert steps["long-enough"] == steps["count"] == steps["headline"] == "STEP_STATE_SUCCEEDED"
    assert (final["output"]["expanded"] == "not needed") is (not short)
    assert final["output"]["words"] > 0
    # The parallel children start only after the selector settled.
    seq = {(e["type"], e.get("stepId")): int(e["seq"]) for e in events}
    for child in ("count", "headline"):
        assert (
            seq[("RUN_EVENT_TYPE_STEP_SUCCEEDED", "long-enough")]
            < seq[("RUN_EVENT_TYPE_STEP_STARTED", child)]
        )


def test_sub_workflows_are_inlined_pinned_and_run(edge: str, settings: Settings) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    headers = {"Authorization": f"Bearer {token}"}
    plan = httpx.post(f"{edge}/v1/workflows/sub-research:compile", headers=headers, json={}, timeout=30)
    assert plan.status_code == 200, plan.text
    fan_out = httpx.get(f"{edge}/v1/workflows/fan-out", headers=headers, timeout=30).json()
    steps = {s["id"]: s for s in plan.json()["steps"]}
    assert steps["one/_input"]["params"]["workflow"] == "workflows/fan-out"
    assert steps["one/_input"]["params"]["workflow_version"] == fan_out["version"]
    assert steps["two/report"]["needs"] == ["two/count", "two/headline", "two/remember"]
    assert steps["compare"]["needs"] == ["one", "two"]

    final, _ = run_to_end(edge, token, "workflows/sub-research", {"first": "tides", "second": "reefs"})
    assert final["state"] == "RUN_STATE_SUCCEEDED", final
    states = {s["stepId"]: s["state"] for s in final["steps"]}
    assert states["one/critique"] == "STEP_STATE_SKIPPED"
    assert states["two/critique"] == "STEP_STATE_SUCCEEDED"
    assert states["one/report"] == states["two/report"] == states["compare"] == "STEP_STATE_SUCCEEDED"
    first, second = final["output"]["first"], final["output"]["second"]
    assert first["critique"] == "not requested" and second["critique"] != "not requested"
    assert first["words"] > 0 and second["words"] > 0
    assert final["output"]["words"] == len(f"{first['report']} {second['report']}".split())
