from __future__ import annotations

from agentflow_tool_sandbox.arguments import args_digest, validate_arguments
from agentflow_tool_sandbox.output import parse_output, stderr_text

SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "maybe": {"type": ["string", "null"]},
    },
    "required": ["text"],
}


def test_valid_arguments_pass() -> None:
    args = {"text": "x", "count": 2.0, "ratio": 1, "flag": True, "mode": "a", "maybe": None}
    assert validate_arguments(SCHEMA, args) == []


def test_every_violation_is_listed() -> None:
    args = {"count": 1.5, "ratio": "1", "flag": 1, "mode": "c", "maybe": 3, "extra": 1}
    problems = dict(validate_arguments(SCHEMA, args))
    assert set(problems) == {
        "arguments.text",
        "arguments.count",
        "arguments.ratio",
        "arguments.flag",
        "arguments.mode",
        "arguments.maybe",
    }
    assert problems["arguments.text"] == "required"


def test_additional_properties_false_rejects_unknown_arguments() -> None:
    schema = {**SCHEMA, "additionalProperties": False}
    assert validate_arguments(schema, {"text": "x", "extra": 1}) == [
        ("arguments.extra", "not a property of this tool")
    ]


def test_digest_is_canonical() -> None:
    assert args_digest({"a": 1, "b": [1, 2]}) == args_digest({"b": [1, 2], "a": 1})
    assert args_digest({"a": 1}) != args_digest({"a": 2})
    assert len(args_digest({})) == 64


def test_output_is_json_when_it_is_json_else_text() -> None:
    assert parse_output(b'{"a": [1, 2]}\n') == {"a": [1, 2]}
    assert parse_output(b"42") == 42
    assert parse_output(b"hello\n") == "hello\n"
    assert parse_output(b"NaN") == "NaN"
    assert parse_output(b"") is None
    assert parse_output(b"\xff{") == "\ufffd{"


def test_stderr_keeps_its_tail() -> None:
    assert stderr_text(b"abcdef", limit=3) == "def"
