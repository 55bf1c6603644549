"""`af run`: start a run through the REST edge and print its events as they stream."""

from __future__ import annotations

from typing import Any

import orjson

from agentflow_cli.rest import EdgeClient

FINAL_STATES = {"RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"}


def describe(event: dict[str, Any]) -> str:
    """One line for a run event."""
    kind = event.get("type", "").removeprefix("RUN_EVENT_TYPE_")
    step = event.get("stepId", "")
    data = event.get("data", {})
    detail = ""
    if "output" in data:
        detail = orjson.dumps(data["output"]).decode()
    elif "error" in data:
        detail = orjson.dumps(data["error"]).decode()
    elif "text" in data:
        detail = repr(data["text"])
    seq = event.get("seq", "?")
    return f"[{seq:>3}] {kind:<15} {step:<12} {detail}"[:400]


async def run_workflow(client: EdgeClient, workflow: str, run_input: dict[str, Any]) -> dict[str, Any]:
    """Start a run, print every event until it finishes, then return the final run resource."""
    name = workflow if workflow.startswith("workflows/") else f"workflows/{workflow}"
    run = await client.call("POST", "/v1/runs", {"workflow": name, "input": run_input})
    print(f"started {run['name']} ({name})", flush=True)
    async for event in client.stream(f"/v1/{run['name']}:watch"):
        print(describe(event), flush=True)
    return await client.call("GET", f"/v1/{run['name']}")
