"""The README flow: `af demo` (what `make run` runs) starts the mesh, runs the demo via the edge, stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, mesh_settings


def test_af_demo_runs_the_demo_workflow_to_success(tmp_path: Path) -> None:
    _, env = mesh_settings(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "agentflow_cli", "demo"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "all SERVING" in out
    assert "RUN_STATE_SUCCEEDED" in out
    for step_kind_event in ("draft", "wordcount", "remember", "recall"):
        assert f"STEP_SUCCEEDED  {step_kind_event}" in out, out
    assert "TOOL_OUTPUT" in out
    assert "mesh stopped" in out
    logs = {p.name for p in (tmp_path / "logs").iterdir()}
    assert len(logs) == 7
