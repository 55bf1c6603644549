"""The audit hash chain: `h_n = sha256(h_{n-1} || canonical(event_n))`, computed and verified offline.

The audit service computes hashes with `chain_hash`; anyone holding an export (`af audit verify`) checks it
with `verify`, which names the first entry that was changed, deleted, reordered or unlinked.

`canonical` is the one byte form of an event: the fields in `HASHED_FIELDS` only, as JSON with sorted keys,
no whitespace, UTF-8, timestamps as RFC 3339 UTC with microseconds, integral floats written as integers and
non-finite floats refused. Events may be Python mappings (snake_case) or protobuf JSON (camelCase).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HASHED_FIELDS = (
    "seq",
    "event_time",
    "actor",
    "tenant",
    "principal",
    "action",
    "resource",
    "outcome",
    "details",
)
"""The fields an entry's hash covers; `prev_hash` enters through the chain, `hash` is the result."""

GENESIS_HASH = ""
"""The `prev_hash` of the first entry."""

_CAMEL = {"event_time": "eventTime", "prev_hash": "prevHash"}


def field(event: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """The value of `name` in `event`, accepting the protobuf JSON (camelCase) spelling too."""
    if name in event:
        return event[name]
    return event.get(_CAMEL.get(name, name), default)


def format_time(moment: datetime | str) -> str:
    """RFC 3339 UTC with microseconds (`2024-01-02T03:04:05.000006Z`); naive datetimes are taken as UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize(value: Any) -> Any:
    """`value` as plain JSON data with one spelling per value (integral floats become integers)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit details must not hold NaN or infinity")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def canonical(event: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an event's hashed fields."""
    seq = field(event, "seq", 0)
    moment = field(event, "event_time")
    body: dict[str, Any] = {
        "seq": int(seq),
        "event_time": format_time(moment) if moment else "",
        "details": normalize(field(event, "details") or {}),
    }
    for name in ("actor", "tenant", "principal", "action", "resource", "outcome"):
        body[name] = str(field(event, name) or "")
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def chain_hash(prev_hash_hex: str, event: Mapping[str, Any]) -> str:
    """`sha256(prev_hash_hex || canonical(event))` as lowercase hex."""
    return hashlib.sha256(prev_hash_hex.encode("ascii") + canonical(event)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking a chain."""

    valid: bool
    checked: int
    first_invalid_seq: int = 0
    reason: str = ""
    head_hash: str = ""


class ChainVerifier:
    """Checks entries one at a time, in order, so a chain of any length can be streamed through it."""

    def __init__(self, start_seq: int = 1, start_hash: str = GENESIS_HASH) -> None:
        self._expected_seq = start_seq
        self._head = start_hash
        self._checked = 0
        self._failure: VerifyResult | None = None

    @property
    def failed(self) -> bool:
        """Whether an invalid entry has been seen (later entries are then ignored)."""
        return self._failure is not None

    @property
    def next_seq(self) -> int:
        """The sequence number the next entry must have."""
        return self._expected_seq

    @property
    def head_hash(self) -> str:
        """The hash of the last valid entry."""
        return self._head

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Check the next entry; False once the chain is broken."""
        if self._failure is not None:
            return False
        self._checked += 1
        seq = int(field(event, "seq", 0))
        expected = self._expected_seq
        if seq > expected:
            return self._fail(
                expected, f"entry {expected} is missing (found {seq} next): deleted or reordered"
            )
        if seq < expected:
            return self._fail(seq, f"entry {seq} is out of order (expected {expected})")
        prev_hash = field(event, "prev_hash")
        if prev_hash is not None and prev_hash != self._head:
            return self._fail(seq, f"prev_hash of entry {seq} does not match the hash of the entry before it")
        stored = field(event, "hash")
        if not stored:
            return self._fail(seq, f"entry {seq} has no hash")
        try:
            computed = chain_hash(self._head, event)
        except (TypeError, ValueError) as exc:
            return self._fail(seq, f"entry {seq} cannot be hashed: {exc}")
        if computed != stored:
            return self._fail(seq, f"hash of entry {seq} does not match its content: the entry was changed")
        self._head = computed
        self._expected_seq = seq + 1
        return True

    def fail_at(self, seq: int, reason: str) -> None:
        """Record a failure found outside the entries themselves (e.g. a truncated tail)."""
        if self._failure is None:
            self._fail(seq, reason)

    def result(self) -> VerifyResult:
        """The verdict over everything fed so far."""
        if self._failure is not None:
            return self._failure
        return VerifyResult(valid=True, checked=self._checked, head_hash=self._head)

    def _fail(self, seq: int, reason: str) -> bool:
        self._failure = VerifyResult(
            valid=False, checked=self._checked, first_invalid_seq=seq, reason=reason, head_hash=self._head
        )
        return False


def verify(
    events: Iterable[Mapping[str, Any]], *, start_seq: int = 1, start_hash: str = GENESIS_HASH
) -> VerifyResult:
    """Check a chain given in stored order; by default it must start at seq 1 with an empty prev_hash."""
    verifier = ChainVerifier(start_seq, start_hash)
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.result()
