"""The REST edge as a user drives it with curl: workflows, runs, streaming, errors as google.rpc.Status."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.support import auth

WORKFLOW_YAML = """
id: {id}
display_name: Integration pipeline
steps:
  - id: draft
    kind: model
    model: local
    prompt: "Write two sentences about {{{{ input.topic }}}}."
  - id: count
    kind: tool
    tool: word-count
    needs: [draft]
    arguments:
      text: "{{{{ steps.draft.output.text }}}}"
  - id: remember
    kind: memory
    op: put
    needs: [draft]
    subject: "{{{{ input.topic }}}}"
    text: "{{{{ steps.draft.output.text }}}}"
  - id: recall
    kind: memory
    op: query
    needs: [remember]
    text: "{{{{ input.topic }}}}"
    subject: "{{{{ input.topic }}}}"
output:
  summary: "{{{{ steps.draft.output.text }}}}"
  words: "{{{{ steps.count.output.words }}}}"
  recalled: "{{{{ steps.recall.output.results[0].text }}}}"
"""


def assert_status_body(reply: httpx.Response, http_status: int, code: int) -> dict[str, Any]:
    assert reply.status_code == http_status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    assert body["code"] == code
    assert body["message"]
    assert "Traceback" not in reply.text
    return body


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    infos = [d for d in body.get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, body
    info: dict[str, Any] = infos[0]
    return info


@pytest.fixture(scope="module")
def workflow(edge: str, token: str) -> str:
    workflow_id = f"pipeline-{uuid.uuid4().hex[:8]}"
    reply = httpx.post(
        f"{edge}/v1/workflows",
        headers=auth(token),
        json={"source": WORKFLOW_YAML.format(id=workflow_id)},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    created = reply.json()
    assert created["name"] == f"workflows/{workflow_id}"
    assert created["version"] == 1
    assert len(created["planHash"]) == 64
    return str(created["name"])


def test_workflow_reads_back_and_lists(edge: str, token: str, workflow: str) -> None:
    got = httpx.get(f"{edge}/v1/{workflow}", headers=auth(token), timeout=30).json()
    assert got["name"] == workflow
    assert [s["id"] for s in got["definition"]["steps"]] == ["draft", "count", "remember", "recall"]
    listed = httpx.get(
        f"{edge}/v1/workflows", headers=auth(token), params={"pageSize": 100}, timeout=30
    ).json()
    assert workflow in [w["name"] for w in listed["workflows"]]


def test_run_streams_events_and_reads_back(edge: str, token: str, workflow: str) -> None:
    topic = f"tidal energy {uuid.uuid4().hex[:6]}"
    reply = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": workflow, "input": {"topic": topic}},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    run = reply.json()
    assert run["name"].startswith("runs/")
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{edge}/v1/{run['name']}:watch", headers=auth(token), timeout=60) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        for line in stream.iter_lines():
            if line.strip():
                item = orjson.loads(line)
                assert "result" in item, item
                events.append(item["result"])
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "RUN_EVENT_TYPE_RUN_CREATED"
    assert types[-1] == "RUN_EVENT_TYPE_RUN_SUCCEEDED", [
        e.get("data") for e in events if "FAILED" in e["type"]
    ]
    succeeded = {e["stepId"] for e in events if e["type"] == "RUN_EVENT_TYPE_STEP_SUCCEEDED"}
    assert succeeded == {"draft", "count", "remember", "recall"}
    assert "RUN_EVENT_TYPE_TOOL_OUTPUT" in types

    final = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(token), timeout=30).json()
    assert final["state"] == "RUN_STATE_SUCCEEDED"
    steps = {s["stepId"]: s for s in final["steps"]}
    draft = steps["draft"]["output"]["text"]
    assert topic.split(maxsplit=1)[0] in draft.lower()
    assert steps["count"]["output"]["words"] == len(draft.split())
    assert final["output"]["summary"] == draft
    assert final["output"]["recalled"] == draft
    assert int(final["usage"]["totalTokens"]) > 0

    # A watcher that reconnects after seq 3 gets the rest, without loss or repetition.
    with httpx.stream(
        "GET", f"{edge}/v1/{run['name']}:watch", headers=auth(token), params={"afterSeq": 3}, timeout=60
    ) as stream:
        resumed = [orjson.loads(line)["result"] for line in stream.iter_lines() if line.strip()]
    assert [int(e["seq"]) for e in resumed] == seqs[3:]


def test_replay_of_a_finished_run_matches_and_calls_nothing(edge: str, token: str, workflow: str) -> None:
    run = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": workflow, "input": {"topic": "replay"}},
        timeout=30,
    ).json()
    early = httpx.post(f"{edge}/v1/{run['name']}:replay", headers=auth(token), json={}, timeout=30)
    if early.status_code != 200:  # still running: replay needs a complete journal
        assert error_info(assert_status_body(early, 400, 9))["reason"] == "RUN_NOT_FINISHED"
    with httpx.stream("GET", f"{edge}/v1/{run['name']}:watch", headers=auth(token), timeout=60) as stream:
        for _ in stream.iter_lines():
            pass
    before = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(token), timeout=30).json()
    report = httpx.post(f"{edge}/v1/{run['name']}:replay", headers=auth(token), json={}, timeout=30).json()
    assert report["matches"] is True, report
    assert report["journaledPlanHash"] == report["replayedPlanHash"] == before["planHash"]
    assert {s["stepId"]: s["verdict"] for s in report["steps"]} == {
        sid: "REPLAY_VERDICT_MATCH" for sid in ("draft", "count", "remember", "recall")
    }
    after = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(token), timeout=30).json()
    assert after["lastEventSeq"] == before["lastEventSeq"]  # nothing ran, nothing was written
    missing = httpx.post(
        f"{edge}/v1/{run['name']}:replay", headers=auth(token), json={"workflowVersion": 7}, timeout=30
    )
    assert_status_body(missing, 404, 5)


def test_runs_are_isolated_by_tenant(edge: str, settings: Settings, token: str, workflow: str) -> None:
    run = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": workflow, "input": {"topic": "x"}},
        timeout=30,
    ).json()
    other = dev_token(settings, subject="mallory", tenant="other-tenant", role="admin")
    reply = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(other), timeout=30)
    assert_status_body(reply, 404, 5)
    listed = httpx.get(f"{edge}/v1/runs", headers=auth(other), timeout=30).json()
    assert run["name"] not in [r["name"] for r in listed.get("runs", [])]


def test_budget_below_the_estimate_is_refused_before_anything_runs(
    edge: str, token: str, workflow: str
) -> None:
    compiled = httpx.post(f"{edge}/v1/{workflow}:compile", headers=auth(token), json={}, timeout=30).json()
    estimate = compiled["costEstimate"]
    tokens = int(estimate["inputTokens"]) + int(estimate["outputTokens"])
    assert tokens > 0
    body = {"workflow": workflow, "input": {"topic": "budget"}, "budget": {"maxTokens": tokens - 1}}
    reply = httpx.post(f"{edge}/v1/runs", headers=auth(token), json=body, timeout=30)
    info = error_info(assert_status_body(reply, 400, 9))
    assert info["reason"] == "BUDGET_EXCEEDED"
    assert info["metadata"]["estimated_tokens"] == str(tokens)
    listed = httpx.get(f"{edge}/v1/runs", headers=auth(token), params={"pageSize": 500}, timeout=30).json()
    assert all(r.get("input", {}).get("topic") != "budget" for r in listed.get("runs", []))

    body["budget"] = {"maxTokens": tokens}
    run = httpx.post(f"{edge}/v1/runs", headers=auth(token), json=body, timeout=30).json()
    assert run["budget"] == {"maxTokens": str(tokens)}


def test_a_run_whose_spend_overruns_the_estimate_is_stopped(edge: str, token: str) -> None:
    """The estimate allows 256 tokens for a templated input; a far longer input spends the budget early."""
    source = (
        f"id: overrun-{uuid.uuid4().hex[:6]}\nsteps:\n"
        "  - id: first\n    kind: model\n    prompt: 'Summarise {{ input.text }}'\n    max_tokens: 50\n"
        "  - id: second\n    kind: model\n    needs: [first]\n"
        "    prompt: 'Shorter: {{ steps.first.output.text }}'\n"
        "    max_tokens: 50\n"
    )
    created = httpx.post(
        f"{edge}/v1/workflows", headers=auth(token), json={"source": source}, timeout=30
    ).json()
    estimate = httpx.post(
        f"{edge}/v1/{created['name']}:compile", headers=auth(token), json={}, timeout=30
    ).json()
    cap = int(estimate["costEstimate"]["inputTokens"]) + int(estimate["costEstimate"]["outputTokens"])
    body = {"workflow": created["name"], "input": {"text": "word " * 2000}, "budget": {"maxTokens": cap}}
    run = httpx.post(f"{edge}/v1/runs", headers=auth(token), json=body, timeout=30).json()
    with httpx.stream("GET", f"{edge}/v1/{run['name']}:watch", headers=auth(token), timeout=60) as stream:
        for _ in stream.iter_lines():
            pass
    final = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(token), timeout=30).json()
    assert final["state"] == "RUN_STATE_FAILED"
    reasons = [d.get("reason") for d in final["error"]["details"]]
    assert "BUDGET_EXHAUSTED" in reasons
    steps = {s["stepId"]: s["state"] for s in final["steps"]}
    assert steps == {"first": "STEP_STATE_SUCCEEDED", "second": "STEP_STATE_SKIPPED"}
    assert int(final["usage"]["totalTokens"]) > cap


def test_idempotent_start_returns_the_same_run(edge: str, token: str, workflow: str) -> None:
    body = {"workflow": workflow, "input": {"topic": "idempotency"}, "requestId": uuid.uuid4().hex}
    first = httpx.post(f"{edge}/v1/runs", headers=auth(token), json=body, timeout=30).json()
    second = httpx.post(f"{edge}/v1/runs", headers=auth(token), json=body, timeout=30).json()
    assert first["name"] == second["name"]


def test_malformed_body_is_400_with_status(edge: str, token: str) -> None:
    reply = httpx.post(
        f"{edge}/v1/runs",
        headers={**auth(token), "Content-Type": "application/json"},
        content=b"{not json",
        timeout=30,
    )
    assert_status_body(reply, 400, 3)


def test_unknown_field_is_400_with_status(edge: str, token: str) -> None:
    reply = httpx.post(
        f"{edge}/v1/runs", headers=auth(token), json={"workflow": "workflows/x", "bogus": 1}, timeout=30
    )
    assert_status_body(reply, 400, 3)


def test_invalid_workflow_lists_every_violation(edge: str, token: str) -> None:
    source = (
        "id: broken\nsteps:\n  - id: a\n    kind: teleport\n  - id: b\n    kind: model\n    needs: [zzz]\n"
    )
    reply = httpx.post(f"{edge}/v1/workflows", headers=auth(token), json={"source": source}, timeout=30)
    body = assert_status_body(reply, 400, 3)
    bad = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert len(bad) == 1
    fields = {v["field"] for v in bad[0]["fieldViolations"]}
    assert any("steps[0]" in f for f in fields) and any("steps[1]" in f for f in fields), fields


def test_unknown_workflow_is_404_with_status(edge: str, token: str) -> None:
    reply = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": "workflows/no-such-workflow", "input": {}},
        timeout=30,
    )
    body = assert_status_body(reply, 404, 5)
    assert error_info(body)["domain"] == "agentflow.dev"


def test_missing_token_is_401(edge: str) -> None:
    reply = httpx.get(f"{edge}/v1/runs", timeout=30)
    assert_status_body(reply, 401, 16)
    assert reply.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_bad_token_is_401(edge: str, settings: Settings) -> None:
    forged = dev_token(settings.with_overrides(jwt_secret="not-the-secret"), role="admin")
    reply = httpx.get(f"{edge}/v1/runs", headers=auth(forged), timeout=30)
    assert_status_body(reply, 401, 16)


def test_expired_token_is_401(edge: str, settings: Settings) -> None:
    expired = dev_token(settings, ttl=-60)
    reply = httpx.get(f"{edge}/v1/runs", headers=auth(expired), timeout=30)
    assert_status_body(reply, 401, 16)


def test_viewer_may_read_but_not_start(edge: str, settings: Settings, workflow: str) -> None:
    viewer = dev_token(settings, subject="val", tenant="acme", role="viewer")
    assert httpx.get(f"{edge}/v1/runs", headers=auth(viewer), timeout=30).status_code == 200
    reply = httpx.post(f"{edge}/v1/runs", headers=auth(viewer), json={"workflow": workflow}, timeout=30)
    assert_status_body(reply, 403, 7)


def test_cancel_finished_run_is_failed_precondition(edge: str, token: str, workflow: str) -> None:
    run = httpx.post(
        f"{edge}/v1/runs",
        headers=auth(token),
        json={"workflow": workflow, "input": {"topic": "c"}},
        timeout=30,
    ).json()
    deadline = time.monotonic() + 60
    state = run["state"]
    while state not in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
        state = httpx.get(f"{edge}/v1/{run['name']}", headers=auth(token), timeout=30).json()["state"]
    assert state == "RUN_STATE_SUCCEEDED"
    reply = httpx.post(f"{edge}/v1/{run['name']}:cancel", headers=auth(token), json={}, timeout=30)
    body = assert_status_body(reply, 400, 9)
    assert error_info(body)["reason"] == "RUN_FINISHED"


def test_audit_chain_records_runs_and_verifies(edge: str, token: str, workflow: str) -> None:
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listed = httpx.get(
            f"{edge}/v1/auditEvents", headers=auth(token), params={"pageSize": 1000}, timeout=30
        ).json()
        events = listed.get("auditEvents", [])
        if any(e["action"] == "run.start" for e in events) and any(
            e["action"] == "tool.execute" for e in events
        ):
            break
        time.sleep(0.3)
    actions = {e["action"] for e in events}
    assert {"run.start", "tool.execute"} <= actions, actions
    assert {e["actor"] for e in events if e["action"] == "run.start"} == {"worker"}
    verified = httpx.post(f"{edge}/v1/auditEvents:verify", headers=auth(token), json={}, timeout=30).json()
    assert verified["valid"] is True
    assert int(verified["checkedCount"]) >= len(events)


def test_unknown_path_is_404_status(edge: str, token: str) -> None:
    reply = httpx.get(f"{edge}/v1/nothing-here", headers=auth(token), timeout=30)
    assert error_info(assert_status_body(reply, 404, 5))["reason"] == "ROUTE_NOT_FOUND"
    wrong_method = httpx.delete(f"{edge}/v1/runs", headers=auth(token), timeout=30)
    assert error_info(assert_status_body(wrong_method, 405, 12))["reason"] == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong_method.headers["allow"]
