"""`af up`: one process per service, ready when every health check says SERVING, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from agentflow_runtime.certs import CLIENT_IDENTITY, init_dev_certs
from agentflow_runtime.settings import SERVICES, Settings

from agentflow_cli import health
from agentflow_cli.services import START_ORDER


class Mesh:
    """The mesh's processes, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, log_dir: Path | None = None, env: dict[str, str] | None = None):
        self.settings = settings
        self.log_dir = log_dir or settings.data_dir / "logs"
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        """Spawn `af serve <name>` with its output in `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentflow_cli", "serve", name],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.procs[name] = proc
        return proc

    async def up(self, timeout: float = 60.0) -> dict[str, str]:
        """Start every service and wait until all report SERVING (raises if one dies or times out)."""
        init_dev_certs(self.settings.certs, [*SERVICES, CLIENT_IDENTITY])
        for name in START_ORDER:
            self.start_service(name)
        statuses = await health.wait_serving(self.settings, list(START_ORDER), timeout)
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead or any(s != "SERVING" for s in statuses.values()):
            self.down()
            raise RuntimeError(f"mesh did not come up: {statuses} exited={dead}; logs in {self.log_dir}")
        return statuses

    def down(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every service (gateway first), wait for the drain, SIGKILL what remains."""
        for name in reversed(START_ORDER):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()
        return codes


async def run_up(settings: Settings) -> int:
    """`af up`: start, report, and wait for Ctrl-C or a service dying."""
    mesh = Mesh(settings)
    statuses = await mesh.up()
    for name, status in statuses.items():
        print(f"{name:14} {status:8} {settings.address(name)}  metrics :{settings.metrics_port(name)}")
    print(f"REST edge: http://{settings.host}:{settings.http_port}  (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        dead = [n for n, p in mesh.procs.items() if p.poll() is not None]
        if dead:
            print(f"service exited: {', '.join(dead)}; stopping the mesh", file=sys.stderr)
            mesh.down()
            return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    mesh.down()
    print("mesh stopped")
    return 0
