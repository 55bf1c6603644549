"""Execution profiles through the REST edge: create, read, update (PATCH with an update mask), refuse."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import auth


def violations(reply: httpx.Response) -> set[str]:
    details: list[dict[str, Any]] = reply.json()["details"]
    return {v["field"] for d in details for v in d.get("fieldViolations", [])}


def test_a_profile_is_created_read_updated_and_validated(edge: str, token: str) -> None:
    tool_id = f"profiled-{uuid.uuid4().hex[:6]}"
    body = {
        "description": "Echoes.",
        "process": {"command": ["echo", "hi"]},
        "profile": {"egress": [{"host": "api.example.com", "port": 443}], "cpuSeconds": 2, "maxProcesses": 4},
    }
    created = httpx.post(
        f"{edge}/v1/tools", params={"toolId": tool_id}, headers=auth(token), json=body, timeout=30
    )
    assert created.status_code == 200, created.text
    profile = created.json()["profile"]
    assert profile["egress"] == [{"host": "api.example.com", "port": 443}]
    assert profile["cpuSeconds"] == "2" and profile["maxProcesses"] == "4"
    assert profile["wallTimeSeconds"] == 30  # defaults filled in

    patched = httpx.patch(
        f"{edge}/v1/tools/{tool_id}",
        params={"updateMask": "profile"},
        headers=auth(token),
        json={"description": "not in the mask", "profile": {"wallTimeSeconds": 5, "maxProcesses": 2}},
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "Echoes."
    assert "egress" not in patched.json()["profile"]  # the profile is replaced as a whole
    fetched = httpx.get(f"{edge}/v1/tools/{tool_id}", headers=auth(token), timeout=30).json()
    assert fetched["profile"]["wallTimeSeconds"] == 5 and fetched["profile"]["maxProcesses"] == "2"

    bad = httpx.patch(
        f"{edge}/v1/tools/{tool_id}",
        params={"updateMask": "profile"},
        headers=auth(token),
        json={"profile": {"egress": [{"host": "*.example.com", "port": 70000}], "maxProcesses": -1}},
        timeout=30,
    )
    assert bad.status_code == 400, bad.text
    assert violations(bad) == {
        "tool.profile.egress[0].host",
        "tool.profile.egress[0].port",
        "tool.profile.max_processes",
    }


def test_an_api_tool_gets_no_host_path_or_variable_unless_delegated(edge: str, token: str) -> None:
    body = {
        "description": "Greedy.",
        "process": {"command": ["cat", "/etc/shadow"]},
        "profile": {
            "readOnlyPaths": ["/etc"],
            "writablePaths": ["/srv/../etc"],
            "env": ["AF_JWT_SECRET", "HOME"],
        },
    }
    reply = httpx.post(
        f"{edge}/v1/tools", params={"toolId": "greedy"}, headers=auth(token), json=body, timeout=30
    )
    assert reply.status_code == 400, reply.text
    assert violations(reply) == {
        "tool.profile.read_only_paths[0]",
        "tool.profile.writable_paths[0]",
        "tool.profile.env[0]",
        "tool.profile.env[1]",
    }
