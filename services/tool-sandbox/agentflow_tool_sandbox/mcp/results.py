"""An MCP tool result as execution events: its text content as output chunks, then one Result."""

from __future__ import annotations

import json
from typing import Any

from mcp import types

from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream, Usage

MAX_OUTPUT_BYTES = 1024 * 1024
STDERR_TAIL = 4096


def output_of(result: types.CallToolResult) -> Any:
    """The step output: structured content when given, else one text parsed as JSON when it is JSON (else the
    text), else the content blocks as JSON."""
    if result.structuredContent is not None:
        return result.structuredContent
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    if len(texts) == 1 and len(result.content) == 1:
        try:
            return json.loads(texts[0])
        except ValueError:
            return texts[0]
    return [c.model_dump(mode="json", exclude_none=True) for c in result.content]


def result_events(result: types.CallToolResult, first_seq: int, wall_seconds: float) -> list[Event]:
    """Chunks for the text content (stderr when the tool reported an error), then the Result."""
    stream = Stream.STDERR if result.isError else Stream.STDOUT
    events: list[Event] = []
    budget = MAX_OUTPUT_BYTES
    truncated = False
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    for seq, text in enumerate(texts, start=first_seq):
        data = text.encode()
        if len(data) > budget:
            data, truncated = data[:budget], True
        budget -= len(data)
        events.append(Chunk(seq=seq, stream=stream, data=data))
        if truncated:
            break
    joined = "\n".join(texts)
    events.append(
        Result(
            exit_code=1 if result.isError else 0,
            truncated=truncated,
            output=None if result.isError else output_of(result),
            stderr=joined[-STDERR_TAIL:] if result.isError else "",
            usage=Usage(wall_seconds=wall_seconds),
        )
    )
    return events
