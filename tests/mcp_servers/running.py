"""Start the demo MCP server over streamable HTTP as a real process, and wait until it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO_SERVER = Path(__file__).with_name("demo_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_command() -> list[str]:
    """The registration command of the stdio demo server (`{python}` is the sandbox's interpreter)."""
    return ["{python}", str(DEMO_SERVER), "stdio"]


class HttpDemoServer:
    """The demo server on `port` (a free one by default); `start`/`stop` may be repeated (same port)."""

    def __init__(self, name: str = "http-demo", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO_SERVER), "http", str(self.port), self.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo MCP server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("the demo MCP server did not start listening")

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to its clients)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    stop = kill
