"""`af watch`: follow a run's events through the REST edge, resuming after a given sequence number."""

from __future__ import annotations

import sys

from agentflow_cli.rest import EdgeClient, EdgeError
from agentflow_cli.runs import describe


async def watch(client: EdgeClient, run: str, after_seq: int) -> int:
    name = run if run.startswith("runs/") else f"runs/{run}"
    try:
        async for event in client.stream(f"/v1/{name}:watch?afterSeq={after_seq}"):
            print(describe(event), flush=True)
        final = await client.call("GET", f"/v1/{name}")
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: {final['state']}")
    return 0 if final["state"] == "RUN_STATE_SUCCEEDED" else 1
