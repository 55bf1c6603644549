"""Free ports for a whole mesh on one machine: tests and the bench run meshes beside a developer's own."""

from __future__ import annotations

import random
import socket

from agentflow_runtime.settings import METRICS_PORT_OFFSET, SERVICES


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_mesh_ports() -> tuple[int, int]:
    """(base gRPC port, REST port): every service's gRPC and metrics port, and the REST port, are free."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        grpc_ports = [base + i for i in range(len(SERVICES))]
        wanted = [*grpc_ports, *(p + METRICS_PORT_OFFSET for p in grpc_ports), base + 9]
        if all(port_free(p) for p in wanted):
            return base, base + 9
    raise RuntimeError("no free port range for a mesh")
