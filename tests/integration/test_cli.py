"""The `af` commands an operator runs against a live mesh: watch, audit verify and export."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from agentflow_cli.supervisor import Mesh
from agentflow_runtime.settings import Settings

from tests.support import af


def test_af_run_then_af_watch_replays_the_events(mesh: tuple[Settings, Mesh]) -> None:
    _, running = mesh
    started = af(running, "run", "demo", "--input", '{"topic": "watching"}')
    assert started.returncode == 0, started.stdout + started.stderr
    run_name = next(line.split()[1] for line in started.stdout.splitlines() if line.startswith("started "))
    watched = af(running, "watch", run_name, "--after", "2")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "[  3]" in watched.stdout and "[  1]" not in watched.stdout
    assert "RUN_SUCCEEDED" in watched.stdout
    assert watched.stdout.strip().endswith("RUN_STATE_SUCCEEDED")


def test_af_audit_verify_export_and_offline_tamper_detection(
    mesh: tuple[Settings, Mesh], tmp_path: Path
) -> None:
    settings, running = mesh
    online = af(running, "audit", "verify")
    assert online.returncode == 0, online.stdout + online.stderr
    assert "audit chain valid" in online.stdout

    export = tmp_path / "audit.jsonl"
    exported = af(running, "audit", "export", str(export))
    assert exported.returncode == 0, exported.stderr
    lines = export.read_bytes().splitlines()
    assert len(lines) >= 2
    offline = af(running, "audit", "verify", "--file", str(export))
    assert offline.returncode == 0 and "valid" in offline.stdout

    events = [orjson.loads(line) for line in lines]
    events[1]["action"] = "tampered"
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    broken = af(running, "audit", "verify", "--file", str(tampered))
    assert broken.returncode == 1
    assert f"BROKEN at entry {events[1]['seq']}" in broken.stdout
    assert httpx.get(f"http://{settings.host}:{settings.http_port}/healthz", timeout=10).status_code == 200
