"""In-process push of journaled events to watchers; other workers' runs are found by polling.

The engine publishes each transaction's events after it commits (`notify`); a watcher subscribed to the
run receives them in its inbox and yields them without reading the database. The database stays the
truth: a watcher catches up from it when it subscribes, when its inbox shows a gap in the event numbers
(it subscribed mid-transaction, or a bare wake-up without events), and when nothing arrived for a poll
interval (the run is executed by another worker process, whose pushes do not reach this one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from agentflow_worker.model import Event

Inbox = asyncio.Queue[Event | None]
"""Events as committed, in order; None = "something changed, read the journal"."""


class EventHub:
    """Per-run subscriber inboxes (a notify costs one put per watcher of that run, none for others)."""

    def __init__(self) -> None:
        self._inboxes: dict[str, set[Inbox]] = {}

    async def notify(self, run_id: str, events: Sequence[Event] = ()) -> None:
        """Publish committed events (none: only wake the run's watchers to read the journal)."""
        for inbox in self._inboxes.get(run_id, ()):
            if not events:
                inbox.put_nowait(None)
            for event in events:
                inbox.put_nowait(event)

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Inbox]:
        """An inbox for the run's events from now on, dropped on exit."""
        inbox: Inbox = asyncio.Queue()
        self._inboxes.setdefault(run_id, set()).add(inbox)
        try:
            yield inbox
        finally:
            inboxes = self._inboxes.get(run_id)
            if inboxes is not None:
                inboxes.discard(inbox)
                if not inboxes:
                    del self._inboxes[run_id]

    def watchers(self, run_id: str) -> int:
        return len(self._inboxes.get(run_id, ()))

    def forget(self, run_id: str) -> None:
        """A run finished: nothing to drop (inboxes go with their watchers)."""
