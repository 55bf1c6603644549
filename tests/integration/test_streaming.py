"""A tool printing a line per second streams each line to a REST client of WatchRun as it is printed.

The catalog `ticker` tool prints `tick 1` .. `tick 10`, one a second. The client reads the gateway's NDJSON
stream of WatchRun and, each time a tick arrives, reads the run back. Incremental delivery is shown by order
and state, never by clock: when the first tick is in the client's hands the run and its tool step are still
running and the run's newest event is older than the last tick's event (so the last tick had not even been
relayed yet); every tick but the last one arrives while the step is still running.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.support import auth

TICKS = 10

WORKFLOW_YAML = """
id: {id}
display_name: Streaming ticker
steps:
  - id: tick
    kind: tool
    tool: ticker
    arguments:
      count: {ticks}
      interval: 1
"""


def start_ticker_run(edge: str, token: str) -> str:
    workflow_id = f"ticker-{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{edge}/v1/workflows",
        headers=auth(token),
        json={"source": WORKFLOW_YAML.format(id=workflow_id, ticks=TICKS)},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    started = httpx.post(
        f"{edge}/v1/runs", headers=auth(token), json={"workflow": f"workflows/{workflow_id}"}, timeout=30
    )
    assert started.status_code == 200, started.text
    return str(started.json()["name"])


def tick_number(event: dict[str, Any]) -> int | None:
    """The tick a TOOL_OUTPUT event carries (a chunk may hold more than one line: the first one counts)."""
    if event["type"] != "RUN_EVENT_TYPE_TOOL_OUTPUT" or event["data"].get("stream") != "stdout":
        return None
    lines = [line for line in str(event["data"]["text"]).splitlines() if line.startswith("tick ")]
    return int(lines[0].split()[1]) if lines else None


def test_tool_output_reaches_a_rest_watcher_as_it_is_printed(edge: str, token: str) -> None:
    run = start_ticker_run(edge, token)
    events: list[dict[str, Any]] = []
    # For each tick event received: (tick, the run as read back right after it arrived).
    seen: list[tuple[int, dict[str, Any]]] = []
    with httpx.stream("GET", f"{edge}/v1/{run}:watch", headers=auth(token), timeout=120) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        for line in stream.iter_lines():
            if not line.strip():
                continue
            event = orjson.loads(line)["result"]
            events.append(event)
            tick = tick_number(event)
            if tick is not None:
                now = httpx.get(f"{edge}/v1/{run}", headers=auth(token), timeout=30).json()
                seen.append((tick, now))

    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1]["type"] == "RUN_EVENT_TYPE_RUN_SUCCEEDED", events[-1]
    printed = "".join(
        e["data"]["text"] for e in events if e["type"] == "RUN_EVENT_TYPE_TOOL_OUTPUT"
    ).splitlines()
    assert printed == [f"tick {i}" for i in range(1, TICKS + 1)]

    # One event per printed line: the tool's output was not held back and sent in one piece.
    ticks = [tick for tick, _ in seen]
    assert ticks == list(range(1, TICKS + 1)), ticks
    last_tick_seq = max(int(e["seq"]) for e in events if tick_number(e) == TICKS)

    first_tick, at_first = seen[0]
    assert first_tick == 1
    assert at_first["state"] == "RUN_STATE_RUNNING"
    assert step_state(at_first, "tick") == "STEP_STATE_RUNNING"
    assert int(at_first["lastEventSeq"]) < last_tick_seq, (at_first["lastEventSeq"], last_tick_seq)

    for tick, run_then in seen[:-1]:
        assert run_then["state"] == "RUN_STATE_RUNNING", (tick, run_then["state"])
        assert step_state(run_then, "tick") == "STEP_STATE_RUNNING", tick

    final = httpx.get(f"{edge}/v1/{run}", headers=auth(token), timeout=30).json()
    assert final["state"] == "RUN_STATE_SUCCEEDED"
    assert int(final["lastEventSeq"]) == seqs[-1]


def test_a_watcher_can_stop_a_ticker_midway(edge: str, token: str) -> None:
    """Receiving tick 2 live lets the client cancel the run before the tool prints the rest."""
    run = start_ticker_run(edge, token)
    ticks: list[int] = []
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{edge}/v1/{run}:watch", headers=auth(token), timeout=120) as stream:
        for line in stream.iter_lines():
            if not line.strip():
                continue
            event = orjson.loads(line)["result"]
            events.append(event)
            tick = tick_number(event)
            if tick is not None:
                ticks.append(tick)
                if tick == 2:
                    cancelled = httpx.post(
                        f"{edge}/v1/{run}:cancel", headers=auth(token), json={"reason": "seen enough"}
                    )
                    assert cancelled.status_code == 200, cancelled.text
    assert events[-1]["type"] == "RUN_EVENT_TYPE_RUN_CANCELLED", events[-1]
    assert ticks[:2] == [1, 2]
    assert len(ticks) < TICKS, ticks  # the tool was stopped while still printing
    final = httpx.get(f"{edge}/v1/{run}", headers=auth(token), timeout=30).json()
    assert final["state"] == "RUN_STATE_CANCELLED"


def step_state(run: dict[str, Any], step_id: str) -> str:
    return str(next(s for s in run["steps"] if s["stepId"] == step_id)["state"])
