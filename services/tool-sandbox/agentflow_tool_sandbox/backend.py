"""The sandbox backend interface: anything that runs a process spec under a profile and streams events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from agentflow_tool_sandbox.events import Event
from agentflow_tool_sandbox.spec import Limits, Permissions, ProcessSpec


class Runner(Protocol):
    """A sandbox backend: bubblewrap (`bwrap.py`, the default) or plain processes (`executor.py`, dev only).

    `execute` yields `Chunk`s as output arrives, then exactly one `Result`. Closing the iterator early
    (or cancelling the task consuming it) stops the execution and leaves nothing running. A backend that
    cannot honour `permissions` or cannot isolate raises `SandboxDenied` before starting anything.
    """

    name: str

    def execute(
        self,
        spec: ProcessSpec,
        limits: Limits,
        arguments: Mapping[str, Any],
        *,
        permissions: Permissions = ...,
        tool_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        """Run `spec` with `arguments` as JSON on stdin, within `limits` and `permissions` (deny by
        default: an empty `Permissions` grants no network, no host path, no host variable)."""
        ...
