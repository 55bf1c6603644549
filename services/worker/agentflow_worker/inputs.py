"""What a step sees: the template scope built from the run input and upstream outputs, and its digest.

The engine journals the digest of each step's rendered input (`input_digest` on STEP_SUCCEEDED); replay
recomputes it from the journal alone and compares, so a change of template, params or wiring is caught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from agentflow_worker.model import RunRecord, StepState


def scope(run: RunRecord, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Template scope: `input`, `steps.<id>.{output,status,error}` of the settled steps (`outputs`), and
    `states.<name>`: the latest visit of each fsm state, i.e. the settled, not skipped step `<name>~<n>`
    with the highest `n` (fsm plans name their steps so; no other step id holds a `~`)."""
    records = {r.step_id: r for r in run.steps}
    steps: dict[str, Any] = {}
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for sid, out in outputs.items():
        record = records.get(sid)
        status = record.state.value if record is not None else StepState.SUCCEEDED.value
        entry = {"output": out, "status": status, "error": record.error if record is not None else None}
        steps[sid] = entry
        name, tilde, visit = sid.rpartition("~")
        ran = tilde and visit.isdigit() and status != StepState.SKIPPED.value
        if ran and (name not in latest or latest[name][0] < int(visit)):
            latest[name] = (int(visit), entry)
    states = {name: entry for name, (_, entry) in latest.items()}
    return {"input": run.input, "steps": steps, "states": states}


def tolerated_failures(run: RunRecord) -> set[str]:
    """Steps the journal shows FAILED whose plan says `on_error: continue`: settled, not run failures."""
    tolerant = {s.id for s in run.plan.steps if s.params.get("on_error") == "continue"}
    return {r.step_id for r in run.steps if r.state is StepState.FAILED and r.step_id in tolerant}


def input_digest(params: Any) -> str:
    """sha256 of the canonical JSON of a step's rendered params."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
