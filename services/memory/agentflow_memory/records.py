"""Memories as the domain sees them: what a caller puts and what is stored."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MemoryDraft:
    """A memory to put; `ttl_seconds` 0 keeps it until erased."""

    memory_id: str
    text: str
    subject: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: int = 0

    def content_hash(self) -> str:
        """A digest of everything a put may change: equal digests mean the put changes nothing."""
        body = {
            "subject": self.subject,
            "namespace": self.namespace,
            "text": self.text,
            "labels": self.labels,
            "metadata": self.metadata,
            "ttl_seconds": self.ttl_seconds,
        }
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class MemoryRecord:
    """A stored memory of one tenant."""

    tenant: str
    memory_id: str
    subject: str
    namespace: str
    text: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    content_hash: str
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None

    @property
    def name(self) -> str:
        """The resource name, `memories/{memory_id}`."""
        return f"memories/{self.memory_id}"

    def expired(self, now: datetime) -> bool:
        """Whether its time to live has run out at `now`."""
        return self.expire_time is not None and self.expire_time <= now


@dataclass(frozen=True)
class ScoredMemory:
    """A query match; `score` is the cosine similarity, higher is nearer."""

    memory: MemoryRecord
    score: float
