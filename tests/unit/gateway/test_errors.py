from __future__ import annotations

import grpc
import orjson
import pytest
from agentflow_gateway.errors import (
    DETAILS_TRAILER,
    http_status,
    status_from_exception,
    status_from_rpc_error,
    status_json,
)
from agentflow_runtime.errors import NotFound
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (code_pb2.OK, 200),
        (code_pb2.INVALID_ARGUMENT, 400),
        (code_pb2.FAILED_PRECONDITION, 400),
        (code_pb2.OUT_OF_RANGE, 400),
        (code_pb2.UNAUTHENTICATED, 401),
        (code_pb2.PERMISSION_DENIED, 403),
        (code_pb2.NOT_FOUND, 404),
        (code_pb2.ALREADY_EXISTS, 409),
        (code_pb2.ABORTED, 409),
        (code_pb2.RESOURCE_EXHAUSTED, 429),
        (code_pb2.CANCELLED, 499),
        (code_pb2.UNIMPLEMENTED, 501),
        (code_pb2.UNAVAILABLE, 503),
        (code_pb2.DEADLINE_EXCEEDED, 504),
        (code_pb2.INTERNAL, 500),
        (code_pb2.UNKNOWN, 500),
        (code_pb2.DATA_LOSS, 500),
        (99, 500),
    ],
)
def test_http_mapping(code: int, http: int) -> None:
    assert http_status(code) == http


def test_status_json_renders_details_with_type() -> None:
    status = NotFound("runs/x not found", reason="RUN_NOT_FOUND", metadata={"run": "runs/x"}).to_status()
    body = orjson.loads(status_json(status))
    assert body["code"] == code_pb2.NOT_FOUND
    assert body["message"] == "runs/x not found"
    (info,) = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "RUN_NOT_FOUND"
    assert info["metadata"] == {"run": "runs/x"}


def test_unknown_detail_types_keep_their_bytes() -> None:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="m",
        details=[any_pb2.Any(type_url="type.example/Nope", value=b"\x01")],
    )
    body = orjson.loads(status_json(status))
    assert body["details"] == [{"@type": "type.example/Nope", "value": "AQ=="}]


def _rpc_error(
    code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, bytes | str], ...]
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details, None)


def test_rich_status_from_trailer() -> None:
    status = NotFound("gone", reason="RUN_NOT_FOUND").to_status()
    exc = _rpc_error(grpc.StatusCode.NOT_FOUND, "gone", ((DETAILS_TRAILER, status.SerializeToString()),))
    assert status_from_rpc_error(exc) == status


def test_plain_status_without_trailer() -> None:
    exc = _rpc_error(grpc.StatusCode.UNAVAILABLE, "connect failed", ())
    assert status_from_rpc_error(exc) == status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message="connect failed"
    )


def test_unexpected_exception_is_generic_internal() -> None:
    status = status_from_exception(RuntimeError("secret path /etc/x"))
    assert status.code == code_pb2.INTERNAL
    assert "secret" not in status.message
