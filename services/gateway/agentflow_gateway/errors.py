"""gRPC status ↔ HTTP: the standard code mapping and `google.rpc.Status` as the JSON error body.

Every error the edge answers is a `google.rpc.Status` rendered as JSON (`code`, `message`, `details` with
`@type`), as grpc-gateway does. A backend's rich status (the `grpc-status-details-bin` trailer) is passed
through unchanged; anything unexpected becomes a generic INTERNAL that says nothing of the gateway's insides.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any, cast

import grpc
import orjson
from agentflow_runtime.errors import AgentFlowError, internal_status
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "DETAILS_TRAILER",
    "http_status",
    "status_from_exception",
    "status_from_rpc_error",
    "status_json",
    "status_payload",
]

log = logging.getLogger("agentflow.gateway")

DETAILS_TRAILER = "grpc-status-details-bin"

# Importing error_details_pb2 registers ErrorInfo, BadRequest & co. so `details` render with their fields.
_ = error_details_pb2

_HTTP_BY_CODE: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}


def http_status(code: int) -> int:
    """The HTTP status for a `google.rpc.Code` value (500 for codes outside the enum)."""
    return _HTTP_BY_CODE.get(code, 500)


def status_from_rpc_error(exc: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The backend's status: its rich `grpc-status-details-bin` trailer, else code and message."""
    code = exc.code()
    code_value = code.value[0] if isinstance(code, grpc.StatusCode) else code_pb2.UNKNOWN
    trailers = cast(Sequence[tuple[str, str | bytes]], tuple(exc.trailing_metadata() or ()))
    for key, value in trailers:
        if key == DETAILS_TRAILER and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:
                break
            if status.code == code_value:
                return status
            break
    return status_pb2.Status(code=code_value, message=exc.details() or code.name)


def status_from_exception(exc: BaseException) -> status_pb2.Status:
    """The status to answer for any exception; unexpected ones are logged and reported generically."""
    if isinstance(exc, AgentFlowError):
        return exc.to_status()
    if isinstance(exc, grpc.aio.AioRpcError):
        return status_from_rpc_error(exc)
    log.error("unexpected error at the edge", exc_info=exc)
    return internal_status()


def status_payload(status: status_pb2.Status) -> dict[str, Any]:
    """A `google.rpc.Status` as a JSON-ready dict; details of unknown types keep their raw bytes."""
    details: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            details.append(json_format.MessageToDict(detail))
        except (TypeError, KeyError, json_format.Error):
            details.append({"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()})
    return {"code": status.code, "message": status.message, "details": details}


def status_json(status: status_pb2.Status) -> bytes:
    """The JSON body for an error response."""
    return orjson.dumps(status_payload(status))
