"""Agent steps end to end through the REST edge: the catalog's editor agent (two tools, a delegated reviewer,
a transfer to the publisher) completes its scripted conversation; its turns stream on WatchRun."""

from __future__ import annotations

import httpx
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.integration.test_catalog_workflows import run_to_end


def test_an_agent_with_two_tools_and_handoffs_completes_its_scripted_conversation(
    edge: str, settings: Settings
) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    final, events = run_to_end(edge, token, "workflows/agent-demo", {"text": "tides turn twice a day"})

    assert final["state"] == "RUN_STATE_SUCCEEDED", final
    output = final["output"]
    assert output["agent"] == "publisher"
    published = "Published (tick 1\ntick 2\n). Publish it. The reviewer said: Approved:"
    assert output["answer"].startswith(published)
    assert "Is a draft of 9 words fine to publish?" in output["answer"]
    assert output["turns"] == 6
    assert [(h["from"], h["to"], h["mode"]) for h in output["handoffs"]] == [
        ("editor", "reviewer", "delegate"),
        ("editor", "publisher", "transfer"),
    ]
    assert int(final["usage"]["totalTokens"]) > 0

    turns = [e["data"] for e in events if e["type"] == "RUN_EVENT_TYPE_AGENT_TURN"]
    handoffs = [e["data"] for e in events if e["type"] == "RUN_EVENT_TYPE_AGENT_HANDOFF"]
    assert [t["agent"] for t in turns if "reply" in t] == [
        "editor",
        "editor",
        "reviewer",
        "editor",
        "publisher",
        "publisher",
    ]
    tools = {t["call"]["name"]: t for t in turns if "call" in t}
    assert set(tools) == {"word-count", "ask_reviewer", "transfer_to_publisher", "ticker"}
    assert '"words": 9' in tools["word-count"]["result"]
    assert not any(t["error"] for t in tools.values())
    assert [(h["from"], h["to"]) for h in handoffs] == [("editor", "reviewer"), ("editor", "publisher")]
    # The tools ran in the sandbox like tool steps: their output streamed as TOOL_OUTPUT events.
    assert any(e["type"] == "RUN_EVENT_TYPE_TOOL_OUTPUT" for e in events)


def test_a_workflow_naming_an_unknown_agent_is_refused_with_a_field_violation(
    edge: str, settings: Settings
) -> None:
    token = dev_token(settings, tenant="default", role="developer")
    definition = {
        "id": "ghost-agent",
        "steps": [{"id": "ask", "kind": "agent", "agent": "ghost", "input": "hi"}],
    }
    response = httpx.post(
        f"{edge}/v1/workflows",
        headers={"Authorization": f"Bearer {token}"},
        json={"definition": definition},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    details = response.json()["details"]
    violations = [v for d in details for v in d.get("fieldViolations", [])]
    assert violations[0]["field"] == "steps[0].agent"
    assert "unknown agent 'ghost'" in violations[0]["description"]
