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
