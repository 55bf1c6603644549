"""The gateway's side of `McpBridgeService.Exchange`: one bidirectional stream per MCP request.

The edge sends the client's JSON-RPC request (`tools/list`, `tools/call`) with the caller's identity in the
metadata (as the REST edge does), and reads the tool-sandbox's frames: notifications while a tool runs, then
the response (the frame carrying the request's id). Abandoning the exchange (the MCP client cancelled, or
went away) cancels the stream, which stops the tool in the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from agentflow.tools.v1 import mcp_pb2
from agentflow_runtime.errors import Internal, from_rpc_error

from agentflow_gateway.backends import ChannelSource

__all__ = ["EXCHANGE_PATH", "McpBridge"]

EXCHANGE_PATH = "/agentflow.tools.v1.McpBridgeService/Exchange"
_OWNER = "tool-sandbox"

Message = dict[str, Any]


class McpBridge:
    """Relays JSON-RPC requests to the tool-sandbox over the bridge stream (see the module docstring)."""

    def __init__(self, channels: ChannelSource) -> None:
        self._channels = channels
        self._callable: grpc.aio.StreamStreamMultiCallable[Any, Any] | None = None

    def _exchange(self) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
        if self._callable is None:
            self._callable = self._channels.get(_OWNER).stream_stream(
                EXCHANGE_PATH,
                request_serializer=mcp_pb2.ExchangeRequest.SerializeToString,
                response_deserializer=mcp_pb2.ExchangeResponse.FromString,
            )
        return self._callable

    async def request(
        self, message: Message, metadata: Sequence[tuple[str, str]], *, timeout: float | None = None
    ) -> AsyncIterator[Message]:
        """Send `message` and yield every frame the sandbox answers with; the last one is the response.

        A broken stream raises the service's error (`AgentFlowError`).
        """
        call = self._exchange()(None, metadata=tuple(metadata), timeout=timeout)
        try:
            await call.write(mcp_pb2.ExchangeRequest(json_rpc=json.dumps(message)))
            async for frame in call:
                reply = _decode(frame.json_rpc)
                yield reply
                if "method" not in reply and reply.get("id") == message.get("id"):
                    return
            raise Internal("the tool-sandbox ended the MCP exchange without a response", reason="MCP_BRIDGE")
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            # Done, or abandoned (the client cancelled or went away): ending the stream stops the tool.
            call.cancel()


def _decode(text: str) -> Message:
    try:
        reply = json.loads(text)
    except ValueError:
        raise Internal("the tool-sandbox sent a frame that is not JSON", reason="MCP_BRIDGE") from None
    if not isinstance(reply, dict):
        raise Internal("the tool-sandbox sent a frame that is not a JSON-RPC message", reason="MCP_BRIDGE")
    return reply
