"""What a step sees: the template scope built from the run input and upstream outputs, and its digest.

The engine journals the digest of each step's rendered input (`input_digest` on STEP_SUCCEEDED); replay
recomputes it from the journal alone and compares, so a change of template, params or wiring is caught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from agentflow_worker.model import RunRecord


def scope(run: RunRecord, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Template scope: `input` and `steps.<id>.output`."""
    return {"input": run.input, "steps": {sid: {"output": out} for sid, out in outputs.items()}}


def input_digest(params: Any) -> str:
    """sha256 of the canonical JSON of a step's rendered params."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
