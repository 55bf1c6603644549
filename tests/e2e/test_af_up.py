"""`af up` as an operator uses it: ready when all services serve, `af health` agrees, Ctrl-C stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import REPO, mesh_settings


def test_af_up_serves_until_ctrl_c(tmp_path: Path) -> None:
    _, env = mesh_settings(tmp_path)
    full_env = {**os.environ, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentflow_cli", "up"],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("REST edge:"):
                break
        assert any(line.startswith("REST edge:") for line in lines), "".join(lines)
        serving = [line for line in lines if " SERVING " in line]
        assert len(serving) == 7, "".join(lines)

        health = subprocess.run(
            [sys.executable, "-m", "agentflow_cli", "health"],
            cwd=REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.count("SERVING") == 7

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + rest
        assert "mesh stopped" in rest

        after = subprocess.run(
            [sys.executable, "-m", "agentflow_cli", "health"],
            cwd=REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert after.returncode == 1
        assert after.stdout.count("UNREACHABLE") == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
