"""The error hierarchy survives the wire: code, reason, metadata and field violations."""

from __future__ import annotations

import grpc
import pytest
from agentflow_runtime import errors
from google.rpc import error_details_pb2


def test_to_status_carries_one_error_info_and_bad_request() -> None:
    err = errors.InvalidArgument(
        "bad workflow",
        reason="WORKFLOW_INVALID",
        metadata={"workflow": "w"},
        violations=[("steps[0].kind", "x")],
    )
    status = err.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "bad workflow"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "WORKFLOW_INVALID",
        "agentflow.dev",
        {"workflow": "w"},
    )
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("steps[0].kind", "x")]


@pytest.mark.parametrize(
    "cls",
    [
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.PermissionDenied,
        errors.Unauthenticated,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.Internal,
    ],
)
def test_round_trip_keeps_class_and_details(cls: type[errors.AgentFlowError]) -> None:
    original = cls("boom", reason="SOME_REASON", metadata={"k": "v"}, violations=[("f", "d")])
    rebuilt = errors.from_status(original.to_status())
    assert type(rebuilt) is cls
    assert rebuilt.code == cls.code
    assert (rebuilt.message, rebuilt.reason, rebuilt.metadata, rebuilt.violations) == (
        "boom",
        "SOME_REASON",
        {"k": "v"},
        [("f", "d")],
    )


def test_default_reason_names_the_code() -> None:
    assert errors.NotFound("x").reason == "NOT_FOUND"
    assert errors.internal_status().message == "internal error"
