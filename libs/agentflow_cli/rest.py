"""A small REST client for the edge: start a run and stream its events as NDJSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson


class EdgeError(Exception):
    """The edge answered with a google.rpc.Status."""

    def __init__(self, http_status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {http_status}: {body.get('message', body)}")
        self.http_status = http_status
        self.body = body


class EdgeClient:
    """Calls the REST edge with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One unary call; raises EdgeError for an error status."""
        reply = await self._client.request(method, path, content=None if body is None else orjson.dumps(body))
        data: dict[str, Any] = reply.json() if reply.content else {}
        if reply.status_code >= 400:
            raise EdgeError(reply.status_code, data)
        return data

    async def stream(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """A server stream: yields each `result`; raises EdgeError for an `error` line."""
        async with self._client.stream("GET", path, timeout=None) as reply:
            if reply.status_code >= 400:
                raise EdgeError(reply.status_code, orjson.loads(await reply.aread()))
            async for line in reply.aiter_lines():
                if not line.strip():
                    continue
                item = orjson.loads(line)
                if "error" in item:
                    raise EdgeError(200, item["error"])
                yield item["result"]

    async def close(self) -> None:
        await self._client.aclose()
