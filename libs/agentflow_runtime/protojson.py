"""Conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def struct_from_dict(data: dict[str, Any] | None) -> struct_pb2.Struct:
    """A Struct holding `data` (None gives an empty Struct)."""
    result = struct_pb2.Struct()
    if data:
        result.update(data)
    return result


def dict_from_struct(value: struct_pb2.Struct | None) -> dict[str, Any]:
    """The plain dict a Struct holds (integers stay floats only where they were fractional)."""
    if value is None:
        return {}
    return {k: _normalise(v) for k, v in json_format.MessageToDict(value).items()}


def value_from_py(data: Any) -> struct_pb2.Value:
    """A Value holding any JSON-like Python value."""
    result = struct_pb2.Value()
    json_format.ParseDict(data, result)
    return result


def py_from_value(value: struct_pb2.Value) -> Any:
    """The plain Python value a Value holds (None for an unset Value)."""
    if value.WhichOneof("kind") is None:
        return None
    return _normalise(json_format.MessageToDict(value))


def integral_numbers(data: Any) -> Any:
    """JSON-like data with integral floats as ints (protobuf JSON gives 34.0 for a Value's 34)."""
    return _normalise(data)


def _normalise(data: Any) -> Any:
    if isinstance(data, float) and data.is_integer() and abs(data) < 2**53:
        return int(data)
    if isinstance(data, dict):
        return {k: _normalise(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_normalise(v) for v in data]
    return data


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp:
    """A Timestamp for an aware (or UTC-naive) datetime; unset for None."""
    result = timestamp_pb2.Timestamp()
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        result.FromDatetime(moment)
    return result


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
