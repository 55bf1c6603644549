"""Maps HTTP failures of a provider to the mesh's error hierarchy."""

from __future__ import annotations

import json

import httpx
from agentflow_runtime.errors import (
    AgentFlowError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

__all__ = ["from_response", "from_transport"]

_CONFIGURATION = frozenset({401, 403, 404})


def _detail(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:200]
    return response.text[:200]


def from_response(provider: str, response: httpx.Response) -> AgentFlowError:
    """The error for a non-2xx answer: 429 ResourceExhausted, 5xx Unavailable, 401/403/404
    FailedPrecondition (the gateway's configuration is wrong), other 4xx InvalidArgument."""
    status = response.status_code
    message = f"{provider} answered HTTP {status}: {_detail(response)}"
    meta = {"provider": provider, "http_status": str(status)}
    if status == 429:
        return ResourceExhausted(message, reason="PROVIDER_RATE_LIMITED", metadata=meta)
    if status >= 500:
        return Unavailable(message, reason="PROVIDER_UNAVAILABLE", metadata=meta)
    if status in _CONFIGURATION:
        return FailedPrecondition(message, reason="PROVIDER_REJECTED_CONFIGURATION", metadata=meta)
    return InvalidArgument(message, reason="PROVIDER_REJECTED_REQUEST", metadata=meta)


def from_transport(provider: str, exc: httpx.TransportError) -> AgentFlowError:
    """The error for a request that got no answer: timeouts DeadlineExceeded, the rest Unavailable."""
    meta = {"provider": provider}
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(
            f"{provider} did not answer in time", reason="PROVIDER_TIMEOUT", metadata=meta
        )
    return Unavailable(
        f"{provider} is unreachable: {type(exc).__name__}", reason="PROVIDER_UNREACHABLE", metadata=meta
    )
