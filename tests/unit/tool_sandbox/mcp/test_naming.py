"""Imported tool ids: namespaced by server, valid tool ids, stable across re-imports."""

from __future__ import annotations

from agentflow_runtime.names import TOOL_ID
from agentflow_tool_sandbox.mcp.naming import assign_tool_ids, server_id_from_name, valid_server_id


def test_server_ids() -> None:
    assert valid_server_id("weather") and valid_server_id("gh-1")
    assert not valid_server_id("a--b") and not valid_server_id("Weather") and not valid_server_id("x" * 31)
    assert server_id_from_name("mcpServers/weather") == "weather"
    assert server_id_from_name("tools/weather") is None


def test_names_map_to_valid_ids_under_the_server() -> None:
    ids = assign_tool_ids("gh", ["get_issue", "List Repos", "x" * 100, "---"], {})
    assert ids["get_issue"] == "gh--get-issue"
    assert ids["List Repos"] == "gh--list-repos"
    assert all(TOOL_ID.fullmatch(i) and i.startswith("gh--") for i in ids.values())
    assert len(set(ids.values())) == 4


def test_colliding_names_get_a_hash_and_known_ids_are_kept() -> None:
    ids = assign_tool_ids("s", ["get-issue", "get_issue"], {})
    assert ids["get-issue"] == "s--get-issue"
    assert ids["get_issue"].startswith("s--get-issue-") and ids["get_issue"] != ids["get-issue"]
    # a re-import keeps what was given, even when a new name would now take the plain form
    again = assign_tool_ids("s", ["get_issue", "get-issue"], {"get_issue": "s--get-issue"})
    assert again["get_issue"] == "s--get-issue"
    assert again["get-issue"] != "s--get-issue"
