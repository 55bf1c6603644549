"""Prometheus metrics: RPCs served, their latency, and the `/metrics` endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPCS_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed by the server", ["grpc_service", "grpc_method", "grpc_code"]
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC (to the end of the stream for streams)",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def split_method(method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    _, service, name = method.split("/", 2) if method.count("/") == 2 else ("", "", method)
    return service, name


def serve_metrics(host: str, port: int) -> None:
    """Serve `/metrics` on a background thread."""
    start_http_server(port, addr=host)
