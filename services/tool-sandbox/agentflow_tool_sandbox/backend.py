"""The sandbox backend interface: anything that runs a process spec under limits and streams events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from agentflow_tool_sandbox.events import Event
from agentflow_tool_sandbox.spec import Limits, ProcessSpec


class Runner(Protocol):
    """A sandbox backend (plain processes today; bubblewrap and others slot in beside it).

    `execute` yields `Chunk`s as output arrives, then exactly one `Result`. Closing the iterator early
    (or cancelling the task consuming it) stops the execution and leaves nothing running.
    """

    def execute(
        self, spec: ProcessSpec, limits: Limits, arguments: Mapping[str, Any]
    ) -> AsyncGenerator[Event, None]:
        """Run `spec` with `arguments` as JSON on stdin, within `limits`."""
        ...
