"""Chaos: workers SIGKILLed at random points lose nothing and repeat no side effect.

Real processes on the real PostgreSQL: audit, model-gateway, memory, tool-sandbox and planner, plus THREE
worker processes sharing one database (short leases, fast polls). A `side-effect` tool appends
`{run}/{step}` to a counter file, pausing before and after so kills land mid-call. Eight runs of a
five-step sequential workflow are started over mTLS; meanwhile a random worker is SIGKILLed and restarted
about every 1.5 s. Every run must succeed and the counter must hold every `run/step` exactly once: a
resumed step reuses its journaled attempt, so the sandbox attaches to (or replays) the execution the dead
worker started instead of running the tool again.

The only timing in here is a generous overall deadline, never an assertion about speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentflow.runs.v1 import runs_pb2, runs_pb2_grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow.workflows.v1 import workflows_pb2, workflows_pb2_grpc
from agentflow_cli import health
from agentflow_cli.ports import free_mesh_ports
from agentflow_runtime import context
from agentflow_runtime.certs import CLIENT_IDENTITY, init_dev_certs
from agentflow_runtime.clients import Channels
from agentflow_runtime.protojson import struct_from_dict
from agentflow_runtime.settings import SERVICES, Settings

from tests.support import (
    mesh_settings,
    postgres_database,
    require_postgres,
    sandbox_writable_dir,
    sandbox_writable_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SUPPORT = ("audit", "model-gateway", "memory", "tool-sandbox", "planner")
RUNS = 8
STEPS = 5
WORKERS = 3
KILL_EVERY = 1.5
DEADLINE = 150.0
"""Seconds before the test gives up; a safety net (a typical run takes well under a minute)."""
TENANT = "chaos"

TOOL_SOURCE = textwrap.dedent(
    """
    import fcntl, json, os, random, sys, time
    args = json.load(sys.stdin)
    time.sleep(args.get("pause") or random.uniform(0.3, 0.8))
    with open(os.environ["COUNTER_FILE"], "a") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.write(f"{args['run']}/{args['step']}\\n")
        counter.flush()
        os.fsync(counter.fileno())
        fcntl.flock(counter, fcntl.LOCK_UN)
    time.sleep(random.uniform(0.3, 0.8))
    print(json.dumps({"counted": f"{args['run']}/{args['step']}"}))
    """
)


class Cluster:
    """The support services and the worker processes, each worker on its own port."""

    def __init__(self, settings: Settings, env: dict[str, str], worker_ports: list[int]) -> None:
        self.settings = settings
        self.env = {**os.environ, **env}
        self.worker_ports = worker_ports
        self.log_dir = settings.data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0
        self.database_url = ""
        self.shared = Path()

    def start(self, name: str, extra: dict[str, str] | None = None) -> None:
        service = "worker" if name.startswith("worker") else name
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "agentflow_cli", "serve", service],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **(extra or {})},
            )

    def start_worker(self, index: int) -> None:
        self.start(
            f"worker-{index}",
            {
                "AF_PORTS": json.dumps({"worker": self.worker_ports[index]}),
                "AF_WORKER_LEASE_SECONDS": "2",
                "AF_WORKER_POLL_SECONDS": "0.2",
            },
        )

    def worker_settings(self, index: int) -> Settings:
        return self.settings.model_copy(update={"ports": {"worker": self.worker_ports[index]}})

    async def kill_and_restart_a_worker(self) -> None:
        """SIGKILL a worker, preferring one that holds a run's lease now (so the kill lands mid-run)."""
        holders = await _lease_holders(self.database_url)
        busy = [i for i in range(WORKERS) if self.procs[f"worker-{i}"].pid in holders]
        index = random.choice(busy or list(range(WORKERS)))
        proc = self.procs[f"worker-{index}"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1
        self.start_worker(index)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_postgres()
    with postgres_database() as url:
        root = tmp_path_factory.mktemp("chaos")
        settings, env = mesh_settings(root / "data", url)
        # The counting tool is registered through the API: the operator delegates this one host directory.
        shared = sandbox_writable_dir(root / "shared")
        env["AF_SANDBOX_API_PATH_ROOTS"] = json.dumps([str(shared)])
        workers_base, _ = free_mesh_ports()
        cluster = Cluster(settings, env, [workers_base + i for i in range(WORKERS)])
        cluster.database_url = url
        cluster.shared = shared
        init_dev_certs(settings.certs, [*SERVICES, CLIENT_IDENTITY])
        try:
            for name in SUPPORT:
                cluster.start(name)
            for index in range(WORKERS):
                cluster.start_worker(index)
            asyncio.run(_wait_serving(cluster))
            yield cluster
        finally:
            cluster.stop()


async def _wait_serving(cluster: Cluster) -> None:
    checks = [health.wait_serving(cluster.settings, list(SUPPORT), 90)]
    checks += [health.wait_serving(cluster.worker_settings(i), ["worker"], 90) for i in range(WORKERS)]
    for statuses in await asyncio.gather(*checks):
        assert set(statuses.values()) == {"SERVING"}, f"{statuses}; logs in {cluster.log_dir}"


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(cluster: Cluster) -> None:
    counter = sandbox_writable_file(cluster.shared, "counter.txt")
    errors: dict[str, str] = {}
    states = asyncio.run(_chaos(cluster, counter, errors))

    assert states == {f"r{i}": "SUCCEEDED" for i in range(RUNS)}, f"{errors}; logs in {cluster.log_dir}"
    lines = counter.read_text().splitlines()
    expected = sorted(f"r{i}/s{j}" for i in range(RUNS) for j in range(1, STEPS + 1))
    duplicates = sorted({line for line in lines if lines.count(line) > 1})
    assert not duplicates, f"side effects repeated: {duplicates}"
    assert sorted(lines) == expected
    assert cluster.kills > 0
    resumed = asyncio.run(_resumed_steps(cluster.database_url))
    assert resumed > 0, "no kill landed mid-step: the test proved nothing"
    print(f"chaos: {cluster.kills} SIGKILLs, {resumed} steps resumed mid-call, {len(lines)} side effects")


async def _query(url: str, sql: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _resumed_steps(url: str) -> int:
    """How many steps a worker found RUNNING (its previous owner killed mid-call) and resumed."""
    rows = await _query(
        url, "SELECT data FROM worker.run_events WHERE type = 'STEP_STARTED' AND data::text LIKE '%resumed%'"
    )
    return len(rows)


async def _lease_holders(url: str) -> set[int]:
    """Pids of the worker processes holding a live lease on an unfinished run (owner `worker-{pid}-…`)."""
    rows = await _query(
        url,
        "SELECT DISTINCT lease_owner FROM worker.runs"
        " WHERE state IN ('PENDING', 'RUNNING') AND lease_expires > now() AND lease_owner IS NOT NULL",
    )
    return {int(row["lease_owner"].split("-")[1]) for row in rows}


async def _chaos(cluster: Cluster, counter: Path, errors: dict[str, str]) -> dict[str, str]:
    channels = Channels(cluster.settings, CLIENT_IDENTITY)
    worker_channels = [Channels(cluster.worker_settings(i), CLIENT_IDENTITY) for i in range(WORKERS)]
    try:
        with context.bound(context.CallContext(tenant=TENANT, caller=CLIENT_IDENTITY)):
            await _register(channels, counter)
            stubs: list[runs_pb2_grpc.RunServiceAsyncStub] = [
                runs_pb2_grpc.RunServiceStub(c.get("worker")) for c in worker_channels
            ]
            names = {f"r{i}": await _start(stubs, f"r{i}") for i in range(RUNS)}
            return await _kill_until_final(cluster, stubs, names, errors)
    finally:
        for chans in [channels, *worker_channels]:
            await chans.close()


async def _register(
    channels: Channels, counter: Path, tool_id: str = "side-effect", steps: int = STEPS
) -> None:
    """Register the counting tool as `tool_id` and a sequential workflow of `steps` steps of it (same id)."""
    tools = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
    tool = tools_pb2.Tool(
        description="appends run/step to a counter file",
        input_schema=struct_from_dict(
            {
                "type": "object",
                "properties": {
                    "run": {"type": "string"},
                    "step": {"type": "string"},
                    "pause": {"type": "number"},
                },
                "required": ["run", "step"],
            }
        ),
        process=tools_pb2.ProcessSpec(
            command=["{python}", "-c", TOOL_SOURCE], env={"COUNTER_FILE": str(counter)}
        ),
        profile=tools_pb2.ExecutionProfile(wall_time_seconds=30, writable_paths=[str(counter.parent)]),
    )
    await tools.CreateTool(tools_pb2.CreateToolRequest(tool_id=tool_id, tool=tool), timeout=30)
    definition_steps = [
        {
            "id": f"s{j}",
            "kind": "tool",
            "tool": tool_id,
            "arguments": {"run": "{{ input.tag }}", "step": f"s{j}", "pause": "{{ input.pause }}"},
            **({"needs": [f"s{j - 1}"]} if j > 1 else {}),
        }
        for j in range(1, steps + 1)
    ]
    workflows = workflows_pb2_grpc.WorkflowServiceStub(channels.get("planner"))
    definition = struct_from_dict({"id": tool_id, "steps": definition_steps})
    await workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=workflows_pb2.Workflow(definition=definition)),
        timeout=30,
    )


async def _start(
    stubs: list[runs_pb2_grpc.RunServiceAsyncStub], tag: str, workflow: str = "side-effect", pause: float = 0
) -> str:
    """StartRun on any worker; the request id makes a retry on another worker the same run."""
    request = runs_pb2.StartRunRequest(
        workflow=f"workflows/{workflow}",
        input=struct_from_dict({"tag": tag, "pause": pause}),
        request_id=f"{workflow}-{tag}",
    )
    first = random.randrange(len(stubs))
    for attempt in range(60):
        try:
            run = await stubs[(first + attempt) % len(stubs)].StartRun(request, timeout=10)
            return str(run.name)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.5)
    raise AssertionError(f"could not start run {tag}")


async def _kill_until_final(
    cluster: Cluster,
    stubs: list[runs_pb2_grpc.RunServiceAsyncStub],
    names: dict[str, str],
    errors: dict[str, str],
) -> dict[str, str]:
    """Kill a random worker every KILL_EVERY seconds until every run is final (or the deadline)."""
    final = {"SUCCEEDED", "FAILED", "CANCELLED"}
    states: dict[str, str] = {}
    end = time.monotonic() + DEADLINE
    next_kill = time.monotonic() + KILL_EVERY
    while time.monotonic() < end:
        for tag, name in names.items():
            if states.get(tag) in final:
                continue
            for stub in random.sample(stubs, len(stubs)):
                try:
                    run = await stub.GetRun(runs_pb2.GetRunRequest(name=name), timeout=5)
                except grpc.aio.AioRpcError:
                    continue
                states[tag] = runs_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
                if run.HasField("error"):
                    errors[tag] = run.error.message
                break
        if len(states) == len(names) and set(states.values()) <= final:
            return states
        if time.monotonic() >= next_kill:
            await cluster.kill_and_restart_a_worker()
            next_kill = time.monotonic() + KILL_EVERY
        await asyncio.sleep(0.25)
    return states


def test_cancelling_a_run_kills_its_running_tool(cluster: Cluster) -> None:
    """The tool outlives a dead caller on purpose, so a run's cancellation must reach it explicitly."""
    counter = sandbox_writable_file(cluster.shared, "slow-counter.txt")
    state = asyncio.run(_cancel_mid_tool(cluster, counter))
    assert state == "CANCELLED"
    time.sleep(PAUSE + 1.0)  # past the moment the tool would have written its side effect
    assert counter.read_text() == "", "the cancelled run's tool still ran its side effect"


PAUSE = 4.0


async def _cancel_mid_tool(cluster: Cluster, counter: Path) -> str:
    channels = Channels(cluster.settings, CLIENT_IDENTITY)
    worker_channels = [Channels(cluster.worker_settings(i), CLIENT_IDENTITY) for i in range(WORKERS)]
    try:
        with context.bound(context.CallContext(tenant=TENANT, caller=CLIENT_IDENTITY)):
            await _register(channels, counter, tool_id="slow-effect", steps=1)
            stubs: list[runs_pb2_grpc.RunServiceAsyncStub] = [
                runs_pb2_grpc.RunServiceStub(c.get("worker")) for c in worker_channels
            ]
            name = await _start(stubs, "c0", workflow="slow-effect", pause=PAUSE)
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end:  # until the tool step is running
                run = await _get(stubs, name)
                if run is not None and run.steps and run.steps[0].state == runs_pb2.STEP_STATE_RUNNING:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the tool process is up and sleeping before its side effect
            for stub in stubs:
                try:
                    await stub.CancelRun(runs_pb2.CancelRunRequest(name=name, reason="chaos"), timeout=10)
                    break
                except grpc.aio.AioRpcError:
                    continue
            while time.monotonic() < end:
                run = await _get(stubs, name)
                if run is not None and run.state in (
                    runs_pb2.RUN_STATE_SUCCEEDED,
                    runs_pb2.RUN_STATE_FAILED,
                    runs_pb2.RUN_STATE_CANCELLED,
                ):
                    return runs_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
                await asyncio.sleep(0.1)
            return "TIMED OUT"
    finally:
        for chans in [channels, *worker_channels]:
            await chans.close()


async def _get(stubs: list[runs_pb2_grpc.RunServiceAsyncStub], name: str) -> runs_pb2.Run | None:
    for stub in stubs:
        try:
            return await stub.GetRun(runs_pb2.GetRunRequest(name=name), timeout=5)
        except grpc.aio.AioRpcError:
            continue
    return None
