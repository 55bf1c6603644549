"""The identity and tenancy of the call being served, available anywhere below the servicer."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

TENANT_KEY = "x-af-tenant"
PRINCIPAL_KEY = "x-af-principal"
ROLE_KEY = "x-af-role"
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class CallContext:
    """Who is calling: the end user (from the edge) and the mesh peer (from its certificate)."""

    tenant: str = DEFAULT_TENANT
    principal: str = ""
    role: str = ""
    caller: str = ""
    servicer_context: grpc.aio.ServicerContext[object, object] | None = None

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata that carries this context to the next service."""
        pairs = [(TENANT_KEY, self.tenant)]
        if self.principal:
            pairs.append((PRINCIPAL_KEY, self.principal))
        if self.role:
            pairs.append((ROLE_KEY, self.role))
        return pairs

    def time_remaining(self) -> float | None:
        """Seconds left before the incoming call's deadline, None without one."""
        if self.servicer_context is None:
            return None
        remaining = self.servicer_context.time_remaining()
        return None if remaining is None else max(0.0, float(remaining))


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "af_call",
    default=CallContext(),  # noqa: B039 - frozen, never mutated
)


def current() -> CallContext:
    """The context of the call being served (a default one outside any call)."""
    return _current.get()


def from_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None,
    caller: str,
    servicer_context: grpc.aio.ServicerContext[object, object] | None = None,
) -> CallContext:
    """Build the call context from incoming metadata and the peer identity."""
    values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (metadata or ())}
    return CallContext(
        tenant=values.get(TENANT_KEY) or DEFAULT_TENANT,
        principal=values.get(PRINCIPAL_KEY, ""),
        role=values.get(ROLE_KEY, ""),
        caller=caller,
        servicer_context=servicer_context,
    )


@contextmanager
def bound(ctx: CallContext) -> Iterator[CallContext]:
    """Make `ctx` the current call context within the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def call_timeout(default: float) -> float:
    """Timeout for an outgoing call: the incoming deadline's remainder, capped at `default`."""
    remaining = current().time_remaining()
    return default if remaining is None else min(default, remaining)
