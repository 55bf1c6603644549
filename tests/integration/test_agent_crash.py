"""A worker SIGKILLed in the middle of an agent loop: the restarted worker finishes the run, and no completed
tool call or model call is made twice.

A mesh of its own (SQLite and PostgreSQL) on a catalog of its own: a scripted model plays a `clerk` agent that
calls `count` (turn 1), then `slow-count` (turn 2, pausing before its side effect), then transfers to a
`closer` agent that answers. Both tools append their mark to a counter file. The worker is killed while
`slow-count` runs — after turn 1's tool call was journaled — and started again; it resumes the step from the
journal and makes the interrupted call again under the same key, so the tool-sandbox attaches to (or replays)
the execution instead of running the tool twice. The counter must hold each mark exactly once.
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.support import catalog_mesh, sandbox_writable_file, wait_for

pytestmark = [pytest.mark.integration]

PAUSE = 4

TOOL = textwrap.dedent(
    """
    import fcntl, json, os, sys, time
    args = json.load(sys.stdin)
    counter = os.environ["COUNTER_FILE"]
    if args.get("pause"):
        with open(counter + ".started", "a") as started:
            started.write(args["mark"] + "\\n")
        time.sleep(float(args["pause"]))
    with open(counter, "a") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write(args["mark"] + "\\n")
        out.flush()
        os.fsync(out.fileno())
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
          tool_calls: [{name: count, arguments: {mark: "${first_user}/one"}}]
      - when: {agent: clerk, last_tool: count}
        reply:
          tool_calls: [{name: slow-count, arguments: {mark: "${first_user}/two", pause: PAUSE}}]
      - when: {agent: clerk, last_tool: slow-count}
        reply:
          tool_calls: [{name: transfer_to_closer, arguments: {input: "close ${first_user}"}}]
      - when: {agent: closer}
        reply: {text: "closed: ${last_user}"}
""".replace("PAUSE", str(PAUSE))

AGENTS = {
    "clerk": """
name: clerk
model: scripted
instructions: You count things.
tools: [count, slow-count]
handoffs:
  - {agent: closer, mode: transfer, input_filter: full}
max_turns: 5
""",
    "closer": """
name: closer
model: scripted
instructions: You close cases.
max_turns: 2
""",
}

WORKFLOW = """
id: agent-crash
steps:
  - id: work
    kind: agent
    agent: clerk
    input: "{{ input.tag }}"
output:
  answer: "{{ steps.work.output.text }}"
"""


def tool_yaml(tool_id: str, counter: Path) -> str:
    return textwrap.dedent(
        f"""
        id: {tool_id}
        description: Appends a mark to a counter file.
        input_schema:
          type: object
          properties:
            mark: {{type: string}}
            pause: {{type: number}}
          required: [mark]
        process:
          command: ["{{python}}", "{{tool_dir}}/bin/count.py"]
          env: {{COUNTER_FILE: "{counter}"}}
        profile:
          wall_time_seconds: 60
          writable_paths: ["{counter.parent}"]
        """
    )


def write_catalog(root: Path, counter: Path) -> Path:
    catalog = root / "catalog"
    for sub in ("models", "tools/bin", "agents", "workflows"):
        (catalog / sub).mkdir(parents=True)
    (catalog / "models" / "scripted.yaml").write_text(MODELS)
    (catalog / "tools" / "bin" / "count.py").write_text(TOOL)
    for tool_id in ("count", "slow-count"):
        (catalog / "tools" / f"{tool_id}.yaml").write_text(tool_yaml(tool_id, counter))
    for name, text in AGENTS.items():
        (catalog / "agents" / f"{name}.yaml").write_text(text)
    (catalog / "workflows" / "agent-crash.yaml").write_text(WORKFLOW)
    return catalog


@pytest.fixture(params=["sqlite", "postgres"])
def crash_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Mesh, Path]]:
    counter = sandbox_writable_file(tmp_path / "shared", "counter.txt")
    catalog = write_catalog(tmp_path, counter)
    env = {"AF_WORKER_LEASE_SECONDS": "3", "AF_WORKER_POLL_SECONDS": "0.2"}
    with catalog_mesh(request.param, tmp_path / "data", catalog, env) as (settings, mesh):
        yield settings, mesh, counter


def test_a_worker_killed_mid_loop_repeats_no_completed_call(
    crash_mesh: tuple[Settings, Mesh, Path],
) -> None:
    settings, mesh, counter = crash_mesh
    edge = f"http://{settings.host}:{settings.http_port}"
    headers = {"Authorization": f"Bearer {dev_token(settings, tenant='default', role='developer')}"}
    started = httpx.post(
        f"{edge}/v1/runs",
        headers=headers,
        json={"workflow": "workflows/agent-crash", "input": {"tag": "case-7"}},
        timeout=30,
    )
    assert started.status_code == 200, started.text
    name = started.json()["name"]

    # Turn 1's tool call is done (its mark is written), turn 2's slow call is running: kill the worker now.
    started_marks = counter.with_name(counter.name + ".started")
    wait_for(lambda: started_marks.exists() and "case-7/two" in started_marks.read_text(), "slow-count")
    assert counter.read_text().splitlines() == ["case-7/one"]
    worker = mesh.procs["worker"]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    mesh.start_service("worker")

    def final() -> dict[str, Any] | None:
        try:
            run = httpx.get(f"{edge}/v1/{name}", headers=headers, timeout=10).json()
        except httpx.HTTPError:
            return None
        done = run.get("state") in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")
        return run if done else None

    run = wait_for(final, "the run to finish")
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    assert run["output"]["answer"] == "closed: close case-7"

    # Each tool call's side effect happened exactly once, and the slow tool was started once.
    assert sorted(counter.read_text().splitlines()) == ["case-7/one", "case-7/two"]
    assert started_marks.read_text().splitlines() == ["case-7/two"]

    with httpx.stream("GET", f"{edge}/v1/{name}:watch", headers=headers, timeout=60) as stream:
        events = [orjson.loads(line)["result"] for line in stream.iter_lines() if line.strip()]
    starts = [e.get("data", {}) for e in events if e["type"] == "RUN_EVENT_TYPE_STEP_STARTED"]
    assert starts == [{"attempt": 1}, {"attempt": 1, "resumed": True}], "the kill did not land mid-step"
    journal = [e["data"] for e in events if e["type"] == "RUN_EVENT_TYPE_AGENT_TURN"]
    keys = [entry["key"] for entry in journal]
    # Every model turn and tool answer journaled once: t1 and t2 (before the kill) were not redone.
    assert keys == ["t1", "t1c1", "t2", "t2c1", "t3", "t3c1", "t4"], keys
    assert [entry["agent"] for entry in journal if "reply" in entry] == ["clerk", "clerk", "clerk", "closer"]
