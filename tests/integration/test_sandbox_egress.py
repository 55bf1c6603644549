"""Network escape attempts from a sandboxed tool through the whole mesh, each refused or allowed; all audited.

A local HTTP server plays the one allowed host. A tool registered through the REST edge names it (host and
port) in its profile; a workflow runs the tool once per attempt, on the default bubblewrap backend:

- through the egress proxy to the allowed host:port, as plain HTTP and as a CONNECT tunnel: works;
- through the proxy to the allowed host on another port, and to another host: refused with 403;
- a direct socket to the server, bypassing the proxy: fails, there is no network in the sandbox.

Every proxy attempt is a `tool.egress` audit event naming the run, the step, host, port and decision; the
direct attempts leave no egress event (nothing left the sandbox) and are audited as their tool call.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from tests.support import auth, host_address

WAIT = 90.0
BODY = b"hello from the allowed host"

TOOL_SOURCE = textwrap.dedent("""
    import http.client, json, os, socket, sys, urllib.error, urllib.request
    args = json.load(sys.stdin)
    mode, host, port = args["mode"], args["host"], int(args["port"])
    out = {"mode": mode, "proxy": os.environ.get("HTTPS_PROXY", "")}
    try:
        if mode == "http":
            reply = urllib.request.urlopen(f"http://{host}:{port}/hello", timeout=30)
            out.update(status=reply.status, body=reply.read().decode())
        elif mode == "connect":
            proxy_host, _, proxy_port = out["proxy"].removeprefix("http://").partition(":")
            tunnel = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=30)
            tunnel.set_tunnel(host, port)
            tunnel.request("GET", "/hello")
            reply = tunnel.getresponse()
            out.update(status=reply.status, body=reply.read().decode())
        else:
            socket.create_connection((host, port), timeout=10).close()
            out.update(connected=True)
    except urllib.error.HTTPError as exc:
        out.update(status=exc.code, body=exc.read().decode())
    except OSError as exc:
        out.update(error=exc.strerror or str(exc))
    print(json.dumps(out))
""")


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def allowed_port() -> Iterator[int]:
    """The allowed host: an HTTP server on every interface of this machine (so also its non-loopback one)."""
    server = ThreadingHTTPServer(("0.0.0.0", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def register_tool(edge: str, token: str, port: int, host: str = "127.0.0.1") -> str:
    tool_id = f"fetch-{uuid.uuid4().hex[:6]}"
    body = {
        "description": "Tries to reach a host, through the egress proxy or directly.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "mode": {"type": "string"},
                "host": {"type": "string"},
                "port": {"type": "integer"},
            },
            "required": ["mode", "host", "port"],
        },
        "process": {"command": ["{python}", "-c", TOOL_SOURCE]},
        "profile": {"egress": [{"host": host, "port": port}], "wallTimeSeconds": 60},
    }
    reply = httpx.post(
        f"{edge}/v1/tools", params={"toolId": tool_id}, headers=auth(token), json=body, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["profile"]["egress"] == [{"host": host, "port": port}]
    return tool_id


def run_attempts(edge: str, token: str, tool_id: str, attempts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One workflow, one tool step per attempt; the finished run."""
    workflow_id = f"egress-{uuid.uuid4().hex[:6]}"
    steps = "".join(
        f"  - id: {step}\n    kind: tool\n    tool: {tool_id}\n    arguments: {orjson.dumps(args).decode()}\n"
        for step, args in attempts.items()
    )
    created = httpx.post(
        f"{edge}/v1/workflows",
        headers=auth(token),
        json={"source": f"id: {workflow_id}\nsteps:\n{steps}"},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    started = httpx.post(
        f"{edge}/v1/runs", headers=auth(token), json={"workflow": f"workflows/{workflow_id}"}, timeout=30
    )
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    with httpx.stream("GET", f"{edge}/v1/{name}:watch", headers=auth(token), timeout=WAIT) as stream:
        for _ in stream.iter_lines():
            pass
    run: dict[str, Any] = httpx.get(f"{edge}/v1/{name}", headers=auth(token), timeout=30).json()
    return run


def audit_events(edge: str, token: str, resource: str, run: str, count: int) -> list[dict[str, Any]]:
    """The run's audit events about `resource`, once there are `count` (the sink sends in batches)."""
    deadline = time.monotonic() + WAIT
    while True:
        reply = httpx.get(
            f"{edge}/v1/auditEvents",
            params={"resource": resource, "pageSize": 200},
            headers=auth(token),
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        events = [e for e in reply.json().get("auditEvents", []) if e["details"].get("run") == run]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_a_tool_reaches_only_its_allowed_host_and_only_through_the_proxy(
    edge: str, token: str, allowed_port: int
) -> None:
    tool_id = register_tool(edge, token, allowed_port)
    other_port = free_port()
    outside = host_address() or "192.0.2.1"
    # This machine reaches the server on that address: a failure from the sandbox is the sandbox's doing.
    if outside != "192.0.2.1":
        socket.create_connection((outside, allowed_port), timeout=10).close()
    attempts = {
        "allowed": {"mode": "http", "host": "127.0.0.1", "port": allowed_port},
        "tunnel": {"mode": "connect", "host": "127.0.0.1", "port": allowed_port},
        "other-port": {"mode": "http", "host": "127.0.0.1", "port": other_port},
        "other-host": {"mode": "connect", "host": "example.com", "port": 443},
        "direct-loopback": {"mode": "direct", "host": "127.0.0.1", "port": allowed_port},
        "direct-outside": {"mode": "direct", "host": outside, "port": allowed_port},
    }
    run = run_attempts(edge, token, tool_id, attempts)
    assert run["state"] == "RUN_STATE_SUCCEEDED", run.get("error")
    seen = {s["stepId"]: s["output"] for s in run["steps"]}

    assert seen["allowed"]["proxy"] == "http://127.0.0.1:3128"
    assert (seen["allowed"]["status"], seen["allowed"]["body"]) == (200, BODY.decode())
    assert (seen["tunnel"]["status"], seen["tunnel"]["body"]) == (200, BODY.decode())
    assert seen["other-port"]["status"] == 403
    assert "port_not_allowed" in seen["other-port"]["body"]
    assert "connected" not in seen["other-host"]  # the CONNECT was refused: no tunnel
    assert "403" in seen["other-host"]["error"]
    # Bypassing the proxy: 127.0.0.1 is the sandbox's own loopback, and nothing else is routed.
    assert seen["direct-loopback"]["error"] == "Connection refused"
    assert seen["direct-outside"]["error"] == "Network is unreachable"

    egress = audit_events(edge, token, f"tools/{tool_id}", run["name"], 4 + len(attempts))
    by_step = {e["details"]["step_id"]: e for e in egress if e["action"] == "tool.egress"}
    assert set(by_step) == {"allowed", "tunnel", "other-port", "other-host"}
    decided = {
        step: (e["outcome"], e["details"]["host"], int(e["details"]["port"]), e["details"]["reason"])
        for step, e in by_step.items()
    }
    assert decided == {
        "allowed": ("ok", "127.0.0.1", allowed_port, "allowed"),
        "tunnel": ("ok", "127.0.0.1", allowed_port, "allowed"),
        "other-port": ("denied", "127.0.0.1", other_port, "port_not_allowed"),
        "other-host": ("denied", "example.com", 443, "host_not_allowed"),
    }
    assert by_step["allowed"]["details"]["method"] == "GET"
    assert by_step["tunnel"]["details"]["method"] == "CONNECT"
    assert {e["tenant"] for e in by_step.values()} == {"acme"}
    # Every attempt is also its tool call's audit record; the direct ones left no egress record at all.
    executed = {e["details"]["step_id"] for e in egress if e["action"] == "tool.execute"}
    assert executed == set(attempts)


def test_an_allowed_name_that_resolves_to_loopback_is_refused(
    edge: str, token: str, allowed_port: int
) -> None:
    """The profile lists `localhost`, not the literal 127.0.0.1: the name is allowed, but its addresses are
    the tool-sandbox host's own loopback, which the proxy refuses (and audits) after resolving."""
    tool_id = register_tool(edge, token, allowed_port, host="localhost")
    attempts = {
        "by-name": {"mode": "http", "host": "localhost", "port": allowed_port},
        "tunnel-by-name": {"mode": "connect", "host": "localhost", "port": allowed_port},
    }
    run = run_attempts(edge, token, tool_id, attempts)
    assert run["state"] == "RUN_STATE_SUCCEEDED", run.get("error")
    seen = {s["stepId"]: s["output"] for s in run["steps"]}
    assert seen["by-name"]["status"] == 403, seen
    assert "address_not_allowed" in seen["by-name"]["body"] and BODY.decode() not in seen["by-name"]["body"]
    assert "connected" not in seen["tunnel-by-name"] and "403" in seen["tunnel-by-name"]["error"]

    egress = audit_events(edge, token, f"tools/{tool_id}", run["name"], 2 + len(attempts))
    by_step = {e["details"]["step_id"]: e for e in egress if e["action"] == "tool.egress"}
    assert {
        step: (e["outcome"], e["details"]["host"], e["details"]["reason"]) for step, e in by_step.items()
    } == {
        "by-name": ("denied", "localhost", "address_not_allowed"),
        "tunnel-by-name": ("denied", "localhost", "address_not_allowed"),
    }
    assert all("127.0.0.1" in e["details"]["addresses"] for e in by_step.values())


def test_a_tool_without_egress_in_its_profile_has_no_proxy(edge: str, token: str, allowed_port: int) -> None:
    """A profile naming no host: no proxy variables, and a direct socket finds no network."""
    tool_id = f"closed-{uuid.uuid4().hex[:6]}"
    body = {
        "description": "Tries to reach a host directly.",
        "inputSchema": {"type": "object"},
        "process": {"command": ["{python}", "-c", TOOL_SOURCE]},
    }
    reply = httpx.post(
        f"{edge}/v1/tools", params={"toolId": tool_id}, headers=auth(token), json=body, timeout=30
    )
    assert reply.status_code == 200, reply.text
    attempts = {"direct": {"mode": "direct", "host": host_address() or "192.0.2.1", "port": allowed_port}}
    run = run_attempts(edge, token, tool_id, attempts)
    assert run["state"] == "RUN_STATE_SUCCEEDED", run.get("error")
    output = run["steps"][0]["output"]
    assert output["proxy"] == ""
    assert output["error"] == "Network is unreachable"
