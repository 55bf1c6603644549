"""Captured output: the shared output budget, JSON-or-text parsing, stderr capping."""

from __future__ import annotations

import json
from typing import Any

STDERR_RESULT_BYTES = 64 * 1024
"""How much stderr the result carries (its tail); the chunks carry all captured stderr."""


class OutputBudget:
    """Bytes of output an execution may still capture, stdout and stderr together."""

    def __init__(self, limit: int) -> None:
        self.remaining = limit

    def take(self, size: int) -> int:
        """How many of the next `size` bytes fit; they are counted as captured."""
        allowed = min(size, self.remaining)
        self.remaining -= allowed
        return allowed


def parse_output(stdout: bytes) -> Any:
    """stdout parsed as JSON when it is valid JSON, else its text (None when there is none)."""
    text = stdout.decode("utf-8", errors="replace")
    if not text.strip():
        return text or None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def stderr_text(stderr: bytes, limit: int = STDERR_RESULT_BYTES) -> str:
    """The stderr text for the result: its last `limit` bytes, decoded leniently."""
    return stderr[-limit:].decode("utf-8", errors="replace")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
