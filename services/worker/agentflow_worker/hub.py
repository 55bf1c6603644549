"""In-process wake-ups for watchers; other replicas' events are found by polling."""

from __future__ import annotations

import asyncio


class EventHub:
    """A version counter per run; watchers wait for it to move past what they saw."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def version(self, run_id: str) -> int:
        return self._versions.get(run_id, 0)

    async def notify(self, run_id: str) -> None:
        async with self._changed:
            self._versions[run_id] = self._versions.get(run_id, 0) + 1
            self._changed.notify_all()

    async def wait(self, run_id: str, seen: int, timeout: float) -> None:
        """Return when the run's version is past `seen`, or after `timeout` seconds."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._versions.get(run_id, 0) != seen), timeout=timeout
                )
            except TimeoutError:
                return

    def forget(self, run_id: str) -> None:
        self._versions.pop(run_id, None)
