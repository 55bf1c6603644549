from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from agentflow_runtime import hashchain


def build_chain(n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    prev = ""
    for seq in range(1, n + 1):
        event: dict[str, Any] = {
            "seq": seq,
            "event_time": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seq),
            "actor": "worker",
            "tenant": "acme",
            "principal": "bob",
            "action": "run.start",
            "resource": f"runs/{seq}",
            "outcome": "ok",
            "details": {"step": seq, "nested": {"b": [1, 2.5], "a": "x"}},
            "prev_hash": prev,
        }
        event["hash"] = hashchain.chain_hash(prev, event)
        prev = event["hash"]
        events.append(event)
    return events


def test_canonical_is_stable_and_compact() -> None:
    event = {
        "seq": 3,
        "event_time": datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        "details": {"b": 1.0, "a": "é"},
        "action": "x",
        "hash": "ignored",
    }
    text = hashchain.canonical(event).decode()
    assert text == (
        '{"action":"x","actor":"","details":{"a":"é","b":1},"event_time":"2025-01-01T10:00:00.000000Z",'
        '"outcome":"","principal":"","resource":"","seq":3,"tenant":""}'
    )
    same = dict(event, event_time="2025-01-01T10:00:00Z", details={"a": "é", "b": 1})
    assert hashchain.canonical(same) == hashchain.canonical(event)


def test_chain_hash_links_previous() -> None:
    event = build_chain(1)[0]
    assert hashchain.chain_hash("", event) != hashchain.chain_hash("00", event)
    assert len(hashchain.chain_hash("", event)) == 64


def test_valid_chain_verifies() -> None:
    events = build_chain(5)
    result = hashchain.verify(events)
    assert result.valid
    assert result.checked == 5
    assert result.head_hash == events[-1]["hash"]
    assert hashchain.verify([]).valid


def test_protobuf_json_spelling_verifies() -> None:
    events = build_chain(2)
    exported = [
        {
            **{k: v for k, v in e.items() if k not in ("event_time", "prev_hash")},
            "eventTime": hashchain.format_time(e["event_time"]),
            "prevHash": e["prev_hash"],
            "seq": str(e["seq"]),
        }
        for e in events
    ]
    assert hashchain.verify(exported).valid


def test_changed_field_is_named() -> None:
    events = build_chain(5)
    events[2]["outcome"] = "denied"
    result = hashchain.verify(events)
    assert not result.valid
    assert result.first_invalid_seq == 3
    assert "changed" in result.reason
    assert result.head_hash == events[1]["hash"]


def test_changed_details_is_named() -> None:
    events = build_chain(4)
    events[3]["details"]["nested"]["a"] = "y"
    assert hashchain.verify(events).first_invalid_seq == 4


def test_deleted_entry_is_named() -> None:
    events = build_chain(5)
    del events[1]
    result = hashchain.verify(events)
    assert not result.valid
    assert result.first_invalid_seq == 2
    assert "missing" in result.reason


def test_deleted_first_entry_is_named() -> None:
    result = hashchain.verify(build_chain(3)[1:])
    assert result.first_invalid_seq == 1


def test_reordering_is_detected() -> None:
    events = build_chain(5)
    events[1], events[2] = events[2], events[1]
    result = hashchain.verify(events)
    assert not result.valid
    assert result.first_invalid_seq == 2


def test_swapped_content_with_kept_seq_is_detected() -> None:
    events = build_chain(4)
    a, b = events[1], events[2]
    events[1] = {**b, "seq": 2}
    events[2] = {**a, "seq": 3}
    result = hashchain.verify(events)
    assert not result.valid
    assert result.first_invalid_seq == 2


def test_broken_prev_link_is_named() -> None:
    events = build_chain(4)
    events[2]["prev_hash"] = "0" * 64
    result = hashchain.verify(events)
    assert result.first_invalid_seq == 3
    assert "prev_hash" in result.reason


def test_rehashed_entry_breaks_the_next_link() -> None:
    events = build_chain(4)
    events[1]["actor"] = "mallory"
    events[1]["hash"] = hashchain.chain_hash(events[1]["prev_hash"], events[1])
    result = hashchain.verify(events)
    assert result.first_invalid_seq == 3


def test_partial_chain_from_a_known_head() -> None:
    events = build_chain(6)
    result = hashchain.verify(events[3:], start_seq=4, start_hash=events[2]["hash"])
    assert result.valid and result.checked == 3


def test_non_finite_floats_are_invalid() -> None:
    events = build_chain(1)
    events[0]["details"] = {"x": float("nan")}
    result = hashchain.verify(events)
    assert not result.valid and "cannot be hashed" in result.reason
