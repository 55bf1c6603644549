"""`af demo` (what `make run` does): mesh up, demo workflow through the REST edge, mesh down."""

from __future__ import annotations

import sys

import orjson
from agentflow_runtime.settings import Settings

from agentflow_cli.rest import EdgeClient, EdgeError
from agentflow_cli.runs import run_workflow
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token

DEMO_WORKFLOW = "demo"
DEMO_INPUT = {"topic": "durable execution for AI agents"}


async def demo(settings: Settings) -> int:
    mesh = Mesh(settings)
    print("starting the mesh (7 services, mTLS, embedded defaults)...", flush=True)
    try:
        statuses = await mesh.up()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print("all SERVING: " + ", ".join(statuses), flush=True)
    client = EdgeClient(f"http://{settings.host}:{settings.http_port}", dev_token(settings))
    try:
        run = await run_workflow(client, DEMO_WORKFLOW, DEMO_INPUT)
        print(f"run {run['name']} finished: {run['state']}")
        print("output:", orjson.dumps(run.get("output"), option=orjson.OPT_INDENT_2).decode())
        return 0 if run["state"] == "RUN_STATE_SUCCEEDED" else 1
    except EdgeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
        mesh.down()
        print("mesh stopped")
