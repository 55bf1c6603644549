"""A cache of stored workflow versions, which never change once written, and of which version is latest.

A version's definition and plan are immutable, so they are cached without expiry (bounded, least recently used
evicted). "Latest" can change when a new version is stored, by this replica (the cache is told at once) or by
another one (seen after at most `latest_ttl` seconds): a run started in that window uses the previous version,
exactly as if it had started a moment earlier.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .compiler import Plan, plan_from_dict
from .store import StoredWorkflow

Key = tuple[str, str]
"""(tenant, workflow id)."""


class VersionCache:
    def __init__(
        self, max_versions: int = 4096, latest_ttl: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._versions: OrderedDict[tuple[str, str, int], tuple[StoredWorkflow, Plan]] = OrderedDict()
        self._latest: dict[Key, tuple[int, float]] = {}
        self._max = max_versions
        self._ttl = latest_ttl
        self._clock = clock

    def resolve(self, key: Key, version: int) -> int:
        """The version to read: `version` itself, or the cached latest (0 when unknown or stale)."""
        if version:
            return version
        hit = self._latest.get(key)
        return hit[0] if hit is not None and hit[1] > self._clock() else 0

    def get(self, key: Key, version: int) -> tuple[StoredWorkflow, Plan] | None:
        entry = self._versions.get((*key, version))
        if entry is not None:
            self._versions.move_to_end((*key, version))
        return entry

    def put(self, record: StoredWorkflow, *, latest: bool) -> tuple[StoredWorkflow, Plan]:
        """Remember a version read from (or written to) the store; `latest` when it was read as the latest."""
        key = (record.tenant, record.workflow_id)
        entry = (record, plan_from_dict(record.plan))
        self._versions[(*key, record.version)] = entry
        self._versions.move_to_end((*key, record.version))
        while len(self._versions) > self._max:
            self._versions.popitem(last=False)
        if latest:
            self._latest[key] = (record.version, self._clock() + self._ttl)
        return entry
