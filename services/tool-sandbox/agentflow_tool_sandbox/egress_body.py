"""Forwards exactly one plain-HTTP request body from a tool to the upstream, and nothing after it.

The egress proxy serves one request per plain-HTTP connection. Relaying every byte the tool sends after the
head would pass a pipelined second request (with a Host header the proxy never checked) to the allowed
upstream; so the body is read by its framing (`egress_request.body_framing`) and only it is forwarded:
`Content-Length` bytes, or a chunked body re-framed chunk by chunk (canonical size lines, no extensions, no
trailers) up to its last chunk. What the tool sends after that is never read.
"""

from __future__ import annotations

import asyncio
import re

from agentflow_tool_sandbox.egress_request import BadRequest, ProxyRequest

COPY_BYTES = 64 * 1024
MAX_LINE = 4096
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


async def forward_body(
    request: ProxyRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Copy the request's body from `reader` to `writer`; raises BadRequest on a malformed or short body."""
    if request.chunked:
        await _forward_chunked(reader, writer)
    else:
        await _copy_exactly(reader, writer, request.body_length)


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
    while count > 0:
        data = await reader.read(min(count, COPY_BYTES))
        if not data:
            raise BadRequest("the connection closed before the request body ended")
        writer.write(data)
        await writer.drain()
        count -= len(data)


async def _forward_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await _line(reader)
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise BadRequest("a chunk does not start with its size in hex")
        size = int(size_text, 16)
        writer.write(b"%x\r\n" % size)
        if size == 0:
            break
        await _copy_exactly(reader, writer, size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("a chunk does not end with CRLF")
        writer.write(b"\r\n")
    while await _line(reader) != b"":  # trailer fields: read, not forwarded
        pass
    writer.write(b"\r\n")
    await writer.drain()


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One CRLF-terminated line, without its CRLF."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("a chunk line is too long") from exc
    if len(line) > MAX_LINE or not line.endswith(b"\r\n"):
        raise BadRequest("a chunk line is not CRLF-terminated")
    return line[:-2]
