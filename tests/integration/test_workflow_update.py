"""UpdateWorkflow through the REST edge (PATCH): a new version; ReplayRun reports the drift of older runs."""

from __future__ import annotations

import uuid

import httpx
import orjson

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


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
