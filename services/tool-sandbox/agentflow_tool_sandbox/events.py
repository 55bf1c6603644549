"""What an execution produces: output chunks as they arrive, then one result."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any


class Stream(enum.Enum):
    """A process output stream."""

    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class Chunk:
    """A piece of output, in arrival order; `seq` starts at 1 and counts both streams."""

    seq: int
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class Usage:
    """What the process (and the descendants it waited for) consumed."""

    cpu_seconds: float = 0.0
    max_rss_bytes: int = 0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class Result:
    """How an execution ended; always the last event.

    `exit_code` is negative when a signal killed the process (-9 after a wall-time or output-cap kill).
    `output` is stdout parsed as JSON when it is JSON, else the stdout text. `cancelled` when
    CancelToolExecution stopped it (or stopped its key before it started).
    """

    exit_code: int
    timed_out: bool = False
    truncated: bool = False
    output: Any = None
    stderr: str = ""
    usage: Usage = Usage()
    replayed: bool = False
    cancelled: bool = False

    def as_replayed(self) -> Result:
        """This result, marked as answered from an execution record."""
        return replace(self, replayed=True)

    @property
    def succeeded(self) -> bool:
        """Exited 0 within its limits."""
        return self.exit_code == 0 and not (self.timed_out or self.truncated or self.cancelled)


Event = Chunk | Result
