"""Approval as a policy, end to end: a real mesh (seven processes, mTLS) on SQLite and on PostgreSQL.

A catalog of its own: a `count` tool appends a mark to a counter file (so a call that ran shows, once), a
`release` workflow builds and then ships, and a policy gates shipping to production (admins decide, the
ticket lives an hour), shipping to staging (anyone who may decide, two seconds, then the step fails) and the
`clerk` agent's tool calls (developers or admins).

The judged flow: the run pauses WAITING with its ticket; every service process is stopped and started again;
the ticket is found over REST, a developer is refused (403), an admin approves; the run completes and the
gated call ran once; approving again is FAILED_PRECONDITION; a ticket left to expire cannot be decided.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.support import af, catalog_mesh, sandbox_writable_file, wait_for

pytestmark = [pytest.mark.integration]

DEADLINE = 120.0
"""Seconds before the test gives up waiting; never an assertion about speed."""
FINAL = ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")

TOOL = textwrap.dedent(
    """
    import fcntl, json, os, sys
    args = json.load(sys.stdin)
    with open(os.environ["COUNTER_FILE"], "a") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write(args["mark"] + "\\n")
    print(json.dumps({"counted": args["mark"]}))
    """
)

MODELS = """
models:
  - alias: scripted
    provider: local
    script:
      - when: {agent: clerk, last_role: user}
        reply:
          tool_calls: [{name: count, arguments: {mark: "${first_user}/agent", env: production}}]
      - when: {agent: clerk, last_tool: count}
        reply: {text: "counted for ${first_user}"}
"""

AGENT = """
name: clerk
model: scripted
instructions: You count things.
tools: [count]
max_turns: 3
"""

RELEASE = """
id: release
steps:
  - id: build
    kind: tool
    tool: count
    arguments: {mark: "{{ input.tag }}/build", env: "{{ input.env }}"}
  - id: ship
    kind: tool
    needs: [build]
    tool: count
    arguments: {mark: "{{ input.tag }}/ship", env: "{{ input.env }}"}
output:
  shipped: "{{ steps.ship.output.counted }}"
"""

CLERK = """
id: clerk-work
steps:
  - id: work
    kind: agent
    agent: clerk
    input: "{{ input.tag }}"
output:
  answer: "{{ steps.work.output.text }}"
"""

POLICY = """
id: releases
rules:
  - id: production
    description: Shipping to production needs an admin.
    match:
      workflows: [release]
      steps: [ship]
      tools: [count]
      arguments: [{path: env, regex: "^prod"}]
    approvers: [admin]
    ttl_seconds: 3600
    on_expiry: reject
  - id: staging
    description: Shipping to staging is approved within two seconds or not at all.
    match:
      steps: [ship]
      arguments: [{path: env, equals: staging}]
    approvers: [admin, developer]
    ttl_seconds: 2
    on_expiry: fail
  - id: clerk-counts
    description: Every count the clerk agent makes.
    match:
      agents: [clerk]
      tools: [count]
    approvers: [developer, admin]
"""

TOOL_YAML = """
id: count
description: Appends a mark to a counter file.
input_schema:
  type: object
  properties:
    mark: {type: string}
    env: {type: string}
  required: [mark]
process:
  command: ["{python}", "{tool_dir}/bin/count.py"]
  env: {COUNTER_FILE: "@COUNTER@"}
profile:
  wall_time_seconds: 30
  writable_paths: ["@SHARED@"]
"""


def write_catalog(root: Path, counter: Path) -> Path:
    catalog = root / "catalog"
    for sub in ("models", "tools/bin", "agents", "workflows", "policies"):
        (catalog / sub).mkdir(parents=True)
    (catalog / "models" / "scripted.yaml").write_text(MODELS)
    (catalog / "tools" / "bin" / "count.py").write_text(TOOL)
    (catalog / "tools" / "count.yaml").write_text(
        TOOL_YAML.replace("@COUNTER@", str(counter)).replace("@SHARED@", str(counter.parent))
    )
    (catalog / "agents" / "clerk.yaml").write_text(AGENT)
    (catalog / "workflows" / "release.yaml").write_text(RELEASE)
    (catalog / "workflows" / "clerk-work.yaml").write_text(CLERK)
    (catalog / "policies" / "releases.yaml").write_text(POLICY)
    return catalog


@pytest.fixture(params=["sqlite", "postgres"])
def approval_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Mesh, Path]]:
    counter = sandbox_writable_file(tmp_path / "shared", "counter.txt")
    catalog = write_catalog(tmp_path, counter)
    env = {"AF_WORKER_POLL_SECONDS": "0.2"}
    with catalog_mesh(request.param, tmp_path / "data", catalog, env) as (settings, mesh):
        yield settings, mesh, counter


class Edge:
    """The REST edge as three people: an admin, a developer and a viewer (of the tenant the catalog seeds)."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://{settings.host}:{settings.http_port}"
        self.tokens = {
            role: dev_token(settings, subject=f"{role}-1", tenant="default", role=role)
            for role in ("admin", "developer", "viewer")
        }

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def start(self, workflow: str, run_input: dict[str, Any]) -> str:
        reply = self.call("POST", "/v1/runs", json={"workflow": f"workflows/{workflow}", "input": run_input})
        assert reply.status_code == 200, reply.text
        name: str = reply.json()["name"]
        return name

    def run(self, name: str) -> dict[str, Any]:
        reply = self.call("GET", f"/v1/{name}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def wait_state(self, name: str, states: tuple[str, ...]) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            try:
                run = self.run(name)
            except httpx.HTTPError:
                return None
            return run if run["state"] in states else None

        found: dict[str, Any] = wait_for(reached, f"{name} to reach {states}")
        return found

    def tickets(self, run: str, role: str = "admin") -> list[dict[str, Any]]:
        reply = self.call("GET", "/v1/approvals", role, params={"run": run})
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json().get("approvals", [])
        return found

    def decide(self, ticket: str, approve: bool, role: str = "admin", comment: str = "") -> httpx.Response:
        return self.call("POST", f"/v1/{ticket}:decide", role, json={"approve": approve, "comment": comment})

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every event of a finished run (the stream ends with the run)."""
        with httpx.stream(
            "GET",
            f"{self.url}/v1/{name}:watch",
            headers={"Authorization": f"Bearer {self.tokens['viewer']}"},
            timeout=60,
        ) as stream:
            return [orjson.loads(line)["result"] for line in stream.iter_lines() if line.strip()]

    def first_event(self, name: str, kind: str) -> dict[str, Any]:
        """Watch a run that has not finished until an event of `kind` arrives."""
        with httpx.stream(
            "GET",
            f"{self.url}/v1/{name}:watch",
            headers={"Authorization": f"Bearer {self.tokens['viewer']}"},
            timeout=DEADLINE,
        ) as stream:
            for line in stream.iter_lines():
                if line.strip() and (event := orjson.loads(line)["result"])["type"] == kind:
                    found: dict[str, Any] = event
                    return found
        raise AssertionError(f"{name}: the stream ended without {kind}")


def error(reply: httpx.Response, http_status: int, code: int) -> dict[str, Any]:
    """The ErrorInfo of a google.rpc.Status JSON error."""
    assert reply.status_code == http_status, reply.text
    body = reply.json()
    assert body["code"] == code and body["message"], body
    assert "Traceback" not in reply.text
    [info] = [d for d in body.get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo")]
    found: dict[str, Any] = info
    return found


def test_a_run_waits_for_approval_across_a_full_restart(approval_mesh: tuple[Settings, Mesh, Path]) -> None:
    settings, mesh, counter = approval_mesh
    edge = Edge(settings)
    name = edge.start("release", {"tag": "v1", "env": "production"})

    requested = edge.first_event(name, "RUN_EVENT_TYPE_APPROVAL_REQUESTED")
    assert requested["stepId"] == "ship" and requested["runState"] == "RUN_STATE_WAITING"
    assert requested["data"]["rule"] == "releases/production"
    waiting = edge.wait_state(name, ("RUN_STATE_WAITING", *FINAL))
    assert waiting["state"] == "RUN_STATE_WAITING"
    assert {s["stepId"]: s["state"] for s in waiting["steps"]} == {
        "build": "STEP_STATE_SUCCEEDED",
        "ship": "STEP_STATE_WAITING",
    }
    assert counter.read_text().splitlines() == ["v1/build"], "the gated call has not run"

    def audited(resource: str) -> list[tuple[str, str, str]]:
        reply = edge.call("GET", "/v1/auditEvents", params={"resource": resource, "pageSize": 100})
        assert reply.status_code == 200, reply.text
        events = reply.json().get("auditEvents", [])
        return sorted((e["action"], e["outcome"], e.get("principal", "")) for e in events)

    # The request is audited (waited for first: the audit sink buffers in memory, and a restart of the whole
    # mesh may catch an event between the worker and the audit service).
    [opened] = edge.tickets(name)
    end = time.monotonic() + DEADLINE
    while ("approval.request", "ok", "") not in audited(opened["name"]) and time.monotonic() < end:
        time.sleep(0.2)

    # Every service process goes down and comes back: the wait is in the database, not in a coroutine.
    codes = mesh.down()
    assert set(codes) == {"audit", "memory", "model-gateway", "tool-sandbox", "planner", "worker", "gateway"}
    asyncio.run(mesh.up(timeout=120))
    assert edge.run(name)["state"] == "RUN_STATE_WAITING"

    [ticket] = edge.tickets(name, role="viewer")
    assert ticket["name"] == opened["name"]
    assert ticket["state"] == "APPROVAL_STATE_PENDING" and ticket["stepId"] == "ship"
    assert ticket["rule"] == "releases/production" and ticket["approverRoles"] == ["admin"]
    assert ticket["onExpiry"] == "EXPIRY_ACTION_REJECT" and ticket["expireTime"]
    assert ticket["request"]["tool"] == "count"
    assert ticket["request"]["arguments"] == {"mark": "v1/ship", "env": "production"}
    paused = edge.run(name)
    assert paused["pendingApprovals"] == [ticket["name"]]
    assert [s.get("approval", "") for s in paused["steps"]] == ["", ticket["name"]]

    # Only the rule's roles decide: a developer is refused by the worker, a viewer already by the edge.
    refused = edge.decide(ticket["name"], True, "developer")
    assert error(refused, 403, 7)["reason"] == "ROLE_NOT_ALLOWED"
    assert "releases/production allows: admin" in refused.json()["message"], "the worker's check, by rule"
    assert error(edge.decide(ticket["name"], True, "viewer"), 403, 7)["reason"] == "ROLE_NOT_ALLOWED"
    assert edge.run(name)["state"] == "RUN_STATE_WAITING"
    approved = edge.decide(ticket["name"], True, "admin", "ship it")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "APPROVAL_STATE_APPROVED"
    assert approved.json()["decidedBy"] == "admin-1" and approved.json()["comment"] == "ship it"

    done = edge.wait_state(name, FINAL)
    assert done["state"] == "RUN_STATE_SUCCEEDED", done
    assert done["output"] == {"shipped": "v1/ship"}
    assert "pendingApprovals" not in done and done["steps"][1]["approval"] == ticket["name"]
    assert counter.read_text().splitlines() == ["v1/build", "v1/ship"], "the approved call ran once"

    # Approving again is a clear error, and resumes nothing.
    again = error(edge.decide(ticket["name"], True, "admin"), 400, 9)
    assert again["reason"] == "APPROVAL_ALREADY_DECIDED"
    assert edge.run(name)["lastEventSeq"] == done["lastEventSeq"]
    kinds = [(e["type"], e["runState"]) for e in edge.events(name)]
    assert ("RUN_EVENT_TYPE_APPROVAL_REQUESTED", "RUN_STATE_WAITING") in kinds
    assert ("RUN_EVENT_TYPE_APPROVAL_DECIDED", "RUN_STATE_PENDING") in kinds
    decided = [e for e in edge.events(name) if e["type"] == "RUN_EVENT_TYPE_APPROVAL_DECIDED"]
    assert len(decided) == 1 and decided[0]["data"]["state"] == "APPROVED"
    assert counter.read_text().splitlines() == ["v1/build", "v1/ship"]

    # A ticket nobody decides in time expires once; its step fails; it cannot be decided any more.
    late = edge.start("release", {"tag": "v2", "env": "staging"})
    failed = edge.wait_state(late, FINAL)
    assert failed["state"] == "RUN_STATE_FAILED"
    [expired] = edge.tickets(late)
    assert expired["state"] == "APPROVAL_STATE_EXPIRED" and expired["rule"] == "releases/staging"
    ship = next(s for s in failed["steps"] if s["stepId"] == "ship")
    assert ship["state"] == "STEP_STATE_FAILED"
    ship_info = [d for d in ship["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    assert ship_info[0]["reason"] == "APPROVAL_EXPIRED"
    assert error(edge.decide(expired["name"], True, "admin"), 400, 9)["reason"] == "APPROVAL_EXPIRED"
    assert "v2/ship" not in counter.read_text().splitlines()
    expiries = [e for e in edge.events(late) if e["type"] == "RUN_EVENT_TYPE_APPROVAL_DECIDED"]
    assert [e["data"]["state"] for e in expiries] == ["EXPIRED"]

    # The evidence: the request, each decision the worker saw (refused ones too) and the expiry are audited.
    trail = [
        ("approval.decide", "denied", "admin-1"),  # the second approval
        ("approval.decide", "denied", "developer-1"),
        ("approval.decide", "ok", "admin-1"),
        ("approval.request", "ok", ""),
    ]
    end = time.monotonic() + DEADLINE
    while audited(ticket["name"]) != trail and time.monotonic() < end:
        time.sleep(0.2)
    assert audited(ticket["name"]) == trail
    while ("approval.expire", "ok", "") not in audited(expired["name"]) and time.monotonic() < end:
        time.sleep(0.2)
    assert ("approval.expire", "ok", "") in audited(expired["name"])


def test_an_agents_gated_tool_call_waits_and_runs_once_approved(
    approval_mesh: tuple[Settings, Mesh, Path],
) -> None:
    settings, _mesh, counter = approval_mesh
    edge = Edge(settings)
    name = edge.start("clerk-work", {"tag": "case-9"})
    waiting = edge.wait_state(name, ("RUN_STATE_WAITING", *FINAL))
    assert waiting["state"] == "RUN_STATE_WAITING", waiting
    [ticket] = edge.tickets(name)
    assert ticket["rule"] == "releases/clerk-counts" and ticket["stepId"] == "work"
    assert ticket["request"]["agent"] == "clerk" and ticket["request"]["tool"] == "count"
    assert ticket["request"]["arguments"] == {"mark": "case-9/agent", "env": "production"}
    assert counter.read_text() == ""

    assert edge.decide(ticket["name"], True, "developer").status_code == 200
    done = edge.wait_state(name, FINAL)
    assert done["state"] == "RUN_STATE_SUCCEEDED", done
    assert done["output"] == {"answer": "counted for case-9"}
    assert counter.read_text().splitlines() == ["case-9/agent"]
    assert len(edge.tickets(name)) == 1, "the approved call is not gated again when the step resumes"
    turns = [e["data"]["key"] for e in edge.events(name) if e["type"] == "RUN_EVENT_TYPE_AGENT_TURN"]
    assert turns == ["t1", "t1c1", "t2"], "the model turn before the wait was not repeated"


def test_the_catalog_approval_demo(mesh: tuple[Settings, Mesh]) -> None:
    """The repo's catalog (the shared mesh): publishing to production waits for an admin, staging does not;
    the ticket is found and approved with `af approvals`."""
    settings, running = mesh
    edge = Edge(settings)
    staging = edge.start("approval-demo", {"version": "2.1", "target": "staging"})
    name = edge.start("approval-demo", {"version": "2.1", "target": "production", "highlights": "faster"})
    assert edge.wait_state(staging, FINAL)["state"] == "RUN_STATE_SUCCEEDED"
    assert edge.tickets(staging) == []

    waiting = edge.wait_state(name, ("RUN_STATE_WAITING", *FINAL))
    assert waiting["state"] == "RUN_STATE_WAITING", waiting
    [ticket] = edge.tickets(name)
    assert ticket["stepId"] == "publish" and ticket["rule"] == "approval-demo/production-publish"
    assert ticket["request"]["arguments"]["target"] == "production"
    assert error(edge.decide(ticket["name"], True, "developer"), 403, 7)["reason"] == "ROLE_NOT_ALLOWED"
    listed = af(running, "approvals", "list", "--run", name, "--state", "pending")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == [ticket["name"], "pending"], listed.stdout
    approved = af(
        running, "approvals", "approve", ticket["name"].removeprefix("approvals/"), "--comment", "ok"
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.split()[:2] == [ticket["name"], "approved"], approved.stdout
    again = af(running, "approvals", "approve", ticket["name"])
    assert again.returncode == 1 and "HTTP 400" in again.stderr and "already approved" in again.stderr
    done = edge.wait_state(name, FINAL)
    assert done["state"] == "RUN_STATE_SUCCEEDED", done
    assert done["output"]["target"] == "production" and done["output"]["words"] > 0

    # A waiting run is cancelled at once (no worker holds it); its ticket closes.
    other = edge.start("approval-demo", {"version": "2.2", "target": "production"})
    assert edge.wait_state(other, ("RUN_STATE_WAITING", *FINAL))["state"] == "RUN_STATE_WAITING"
    cancelled = edge.call("POST", f"/v1/{other}:cancel", "developer", json={"reason": "not this week"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "RUN_STATE_CANCELLED"
    [closed] = edge.tickets(other)
    assert closed["state"] == "APPROVAL_STATE_REJECTED" and closed["comment"] == "the run was cancelled"
    assert error(edge.decide(closed["name"], True, "admin"), 400, 9)["reason"] == "APPROVAL_ALREADY_DECIDED"
