"""Workflows over the REST edge: UpdateWorkflow (PATCH) makes a new version and ReplayRun reports the drift of
older runs; an invalid fsm or bt is refused with every problem as a field violation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.support import auth

WORKFLOW = """
id: {id}
steps:
  - id: draft
    kind: model
    model: local
    prompt: "{prompt} {{{{ input.topic }}}}."
  - id: count
    kind: tool
    tool: word-count
    needs: [draft]
    arguments:
      text: "{{{{ steps.draft.output.text }}}}"
"""


def test_update_makes_a_new_version_and_replay_reports_the_drift(edge: str, token: str) -> None:
    workflow_id = f"upd-{uuid.uuid4().hex[:8]}"
    v1_source = WORKFLOW.format(id=workflow_id, prompt="Write a note about")
    created = httpx.post(f"{edge}/v1/workflows", headers=auth(token), json={"source": v1_source}, timeout=30)
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    run = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": name, "input": {"topic": "tides"}},
        timeout=30,
    ).json()
    with httpx.stream("GET", f"{edge}/v1/{run['name']}:watch", headers=auth(token), timeout=120) as stream:
        final = [orjson.loads(line)["result"] for line in stream.iter_lines() if line.strip()][-1]
    assert final["type"] == "RUN_EVENT_TYPE_RUN_SUCCEEDED", final

    # A bad update is refused with every violation and stores nothing.
    bad = httpx.patch(
        f"{edge}/v1/{name}",
        headers=auth(token),
        json={"source": f"id: {workflow_id}\nsteps:\n  - {{id: a, kind: model, needs: [zz]}}\n"},
        timeout=30,
    )
    assert bad.status_code == 400, bad.text
    fields = {v["field"] for d in bad.json()["details"] for v in d.get("fieldViolations", [])}
    assert fields == {"steps[0].needs[0]", "steps[0].prompt"}

    v2_source = WORKFLOW.format(id=workflow_id, prompt="Write a long essay about")
    updated = httpx.patch(
        f"{edge}/v1/{name}",
        headers=auth(token),
        params={"updateMask": "source,displayName"},
        json={"source": v2_source, "displayName": "Essays now"},
        timeout=30,
    )
    assert updated.status_code == 200, updated.text
    v2 = updated.json()
    assert v2["version"] == 2 and v2["displayName"] == "Essays now"
    assert v2["planHash"] != created.json()["planHash"]

    report = httpx.post(f"{edge}/v1/{run['name']}:replay", headers=auth(token), json={}, timeout=30).json()
    assert "matches" not in report, report  # proto3 JSON leaves out a false bool
    assert report["replayedWorkflowVersion"] == 2
    assert report["journaledPlanHash"] == created.json()["planHash"] != report["replayedPlanHash"]
    verdicts = {s["stepId"]: s["verdict"] for s in report["steps"]}
    assert verdicts == {"draft": "REPLAY_VERDICT_INPUT_CHANGED", "count": "REPLAY_VERDICT_MATCH"}

    # Against the version it ran, the run still matches.
    pinned = httpx.post(
        f"{edge}/v1/{run['name']}:replay", headers=auth(token), json={"workflowVersion": 1}, timeout=30
    ).json()
    assert pinned["matches"] is True, pinned

    missing = httpx.patch(
        f"{edge}/v1/workflows/nope-{workflow_id}", headers=auth(token), json={"source": v1_source}
    )
    assert missing.status_code == 404, missing.text


def field_violations(reply: httpx.Response) -> set[tuple[str, str]]:
    assert reply.status_code == 400, reply.text
    assert "Traceback" not in reply.text
    details = reply.json()["details"]
    return {(v["field"], v["description"]) for d in details for v in d.get("fieldViolations", [])}


def test_a_viewer_cannot_update(edge: str, settings: Settings) -> None:
    viewer = dev_token(settings, tenant="default", role="viewer")
    reply = httpx.patch(
        f"{edge}/v1/workflows/fan-out", headers=auth(viewer), json={"displayName": "x"}, timeout=30
    )
    assert reply.status_code == 403, reply.text


def test_invalid_fsm_and_bt_list_every_problem(edge: str, token: str) -> None:
    fsm: dict[str, Any] = {
        "id": f"bad-fsm-{uuid.uuid4().hex[:6]}",
        "kind": "fsm",
        "initial": "a",
        "terminal": ["z"],
        "states": {"a": {"transitions": [{"to": "nowhere"}]}, "b": {"transitions": [{"to": "a"}]}, "z": {}},
    }
    found = field_violations(
        httpx.post(f"{edge}/v1/workflows", headers=auth(token), json={"definition": fsm}, timeout=30)
    )
    assert found == {
        ("max_transitions", "is required: the most transitions a run may take (1-100)"),
        ("states.a.transitions[0].to", "unknown target state 'nowhere'"),
        ("states.b", "unreachable from the initial state 'a'"),
        ("states.z", "unreachable from the initial state 'a'"),
    }
    fsm["max_transitions"] = 3
    fsm["states"]["a"] = {"transitions": [{"to": "z", "when": "{{ input.go == }}"}]}
    reply = httpx.post(
        f"{edge}/v1/workflows:validate",
        headers=auth(token),
        json={"workflow": {"definition": fsm}},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert "valid" not in reply.json()  # proto3 JSON leaves out a false bool
    found = {(v["field"], v["description"]) for v in reply.json()["violations"]}
    assert ("states.b", "unreachable from the initial state 'a'") in found
    assert any(f == "states.a.transitions[0].when" and "syntax error" in d for f, d in found), found

    bt = {
        "id": "bad-bt",
        "kind": "bt",
        "root": {
            "selector": [
                {"kind": "tool", "tool": "word-count"},
                {"retry": {"max_attempts": 0}, "do": {"id": "x", "kind": "tool", "tool": "word-count"}},
                {"timeout": 5, "do": {}},
            ]
        },
    }
    reply = httpx.post(
        f"{edge}/v1/workflows:validate",
        headers=auth(token),
        json={"workflow": {"definition": bt}},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    violations = {(v["field"], v["description"]) for v in reply.json()["violations"]}
    assert ("root.selector[0].id", "a leaf step needs an `id`") in violations
    assert (
        "root.selector[2].do.kind",
        "unknown step kind None (known: model, tool, memory, agent, value, workflow)",
    ) in violations
    assert ("root.selector[1].do.retry.max_attempts", "must be an integer from 1 to 100") in violations
