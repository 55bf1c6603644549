"""One error hierarchy for the mesh: each error carries its gRPC code, an ErrorInfo reason and violations.

Raised anywhere in a service, it becomes a `google.rpc.Status` (with `ErrorInfo` and, for bad input,
`BadRequest`) at the transport; on the client side `from_rpc_error` rebuilds it from the trailers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "agentflow.dev"


class AgentFlowError(Exception):
    """Base of every error a service reports on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations)

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` this error stands for."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        details = [_pack(info)]
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(AgentFlowError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(AgentFlowError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(AgentFlowError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(AgentFlowError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(AgentFlowError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(AgentFlowError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(AgentFlowError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(AgentFlowError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(AgentFlowError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Aborted(AgentFlowError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Cancelled(AgentFlowError):
    code = grpc.StatusCode.CANCELLED
    default_reason = "CANCELLED"


class Internal(AgentFlowError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[AgentFlowError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Aborted,
        Cancelled,
        Internal,
    )
}


def error_for_code(code: grpc.StatusCode) -> type[AgentFlowError]:
    """The error class for a gRPC code (AgentFlowError itself for codes without one)."""
    return _BY_CODE.get(code, AgentFlowError)


def from_status(status: status_pb2.Status) -> AgentFlowError:
    """Rebuild an error from a `google.rpc.Status`, keeping its reason, metadata and violations."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    err = error_for_code(code)(status.message, reason=reason, metadata=metadata, violations=violations)
    err.code = code
    return err


def from_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError) -> AgentFlowError:
    """Rebuild the error a remote service raised, from its rich status when it sent one."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        status = status_pb2.Status(code=code.value[0], message=details or code.name)
    return from_status(status)


def internal_status(message: str = "internal error") -> status_pb2.Status:
    """A generic INTERNAL status that says nothing of the server's insides."""
    return Internal(message).to_status()


__all__ = [
    "ERROR_DOMAIN",
    "Aborted",
    "AgentFlowError",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "code_pb2",
    "error_for_code",
    "from_rpc_error",
    "from_status",
    "internal_status",
]
