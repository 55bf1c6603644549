"""Kind-specific step parameters: what each step kind accepts, and its normalised form in a plan.

model   `model` (alias, default "local"); exactly one of `prompt` (template) or `messages`
        (`[{role: system|user|assistant, content}]`); optional `system`, `max_tokens` (> 0),
        `temperature` (0..2). Normalised to `{model, messages, max_tokens?, temperature?}` with `system`
        and `prompt` folded into `messages`.
tool    `tool` (registered tool name), optional `arguments` (object; values may be templates).
        Normalised to `{tool, arguments}`.
memory  `op`: put | query | get | erase, then per op:
        put `text`, optional `memory_id`, `subject`, `namespace`, `labels`, `ttl_seconds`, `metadata`;
        query `text`, optional `subject`, `namespace`, `labels`, `top_k`;
        get `memory_id`; erase `subject`. Normalised to `op` plus the fields given.
        (`memory_id` names the memory, `memories/{memory_id}`; the step's own `id` is its step id.)
agent   `agent` (an agent of `catalog/agents/`), `input` (template): the first user message. Normalised to
        `{agent, input}`; the planner then pins the agent definitions it reaches (`agents.pin`).
value   a pure step, no call: `value` (any JSON, strings may be templates) is its output; optional `require`
        (a boolean or template) fails the step (FAILED_PRECONDITION) when false, with `message`. The fsm and
        bt compilers build their routing and composite nodes from value steps.
workflow `workflow` (`<id>` or `<id>@<version>`, another workflow of the tenant), optional `input` (an object,
        values may be templates): the sub-workflow's run input. Inlined by `subworkflows` (dag only).

Integer parameters accept a whole `{{ ... }}` template in place of a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from agentflow_runtime.names import AGENT_NAME, TOOL_ID

from .violations import Violations

__all__ = ["COMMON_FIELDS", "RETRY_FIELDS", "WORKFLOW_REF", "StepKind", "normalize_params"]

WORKFLOW_REF = re.compile(r"(?P<id>[a-z][a-z0-9-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?")
"""A sub-workflow reference: `<id>` or `<id>@<version>`."""

COMMON_FIELDS = frozenset(
    {"id", "kind", "needs", "description", "timeout_seconds", "retry", "when", "on_error", "join"}
)
ON_ERROR = ("fail", "continue")
JOINS = ("all", "any")
RETRY_FIELDS = frozenset(
    {"max_attempts", "initial_backoff_seconds", "max_backoff_seconds", "multiplier", "jitter", "retry_on"}
)
DEFAULT_RETRY_ON = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED")
GRPC_CODES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
_ROLES = ("system", "user", "assistant")
_MEMORY_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # op: (required, optional)
    "put": (
        frozenset({"text"}),
        frozenset({"memory_id", "subject", "namespace", "labels", "ttl_seconds", "metadata"}),
    ),
    "query": (frozenset({"text"}), frozenset({"subject", "namespace", "labels", "top_k"})),
    "get": (frozenset({"memory_id"}), frozenset()),
    "erase": (frozenset({"subject"}), frozenset()),
}
_MEMORY_STRINGS = ("text", "memory_id", "subject", "namespace")


class StepKind(StrEnum):
    """What a step does."""

    MODEL = "model"
    TOOL = "tool"
    MEMORY = "memory"
    AGENT = "agent"
    VALUE = "value"
    WORKFLOW = "workflow"
    """A sub-workflow: inlined into the plan by `subworkflows`, never a plan step itself."""


def _is_whole_template(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("{{") and value.strip().endswith("}}")


def _integer(value: Any, field: str, out: Violations, minimum: int) -> int | str | None:
    if _is_whole_template(value):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        out.add(field, "must be an integer")
        return None
    if value < minimum:
        out.add(field, f"must be at least {minimum}")
        return None
    return value


def _string(value: Any, field: str, out: Violations) -> str | None:
    if not isinstance(value, str) or not value:
        out.add(field, "must be a non-empty string")
        return None
    return value


def _unknown(
    params: Mapping[str, Any], allowed: frozenset[str], path: str, kind: str, out: Violations
) -> None:
    for key in params:
        if key not in allowed and key not in COMMON_FIELDS:
            out.add(
                f"{path}.{key}", f"unknown field for a {kind} step (allowed: {', '.join(sorted(allowed))})"
            )


def _model(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    allowed = frozenset({"model", "prompt", "messages", "system", "max_tokens", "temperature"})
    _unknown(params, allowed, path, "model", out)
    result: dict[str, Any] = {"model": _string(params.get("model", "local"), f"{path}.model", out)}
    messages: list[dict[str, Any]] = []
    if "system" in params and _string(params["system"], f"{path}.system", out):
        messages.append({"role": "system", "content": params["system"]})
    if ("prompt" in params) == ("messages" in params):
        out.add(f"{path}.prompt", "a model step needs exactly one of `prompt` or `messages`")
    elif "prompt" in params:
        if _string(params["prompt"], f"{path}.prompt", out):
            messages.append({"role": "user", "content": params["prompt"]})
    elif not isinstance(params["messages"], list) or not params["messages"]:
        out.add(f"{path}.messages", "must be a non-empty list of {role, content}")
    else:
        for i, message in enumerate(params["messages"]):
            where = f"{path}.messages[{i}]"
            if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
                out.add(where, "must be an object with exactly `role` and `content`")
                continue
            if message["role"] not in _ROLES:
                out.add(f"{where}.role", f"must be one of {', '.join(_ROLES)}")
            if _string(message["content"], f"{where}.content", out):
                messages.append({"role": message["role"], "content": message["content"]})
    result["messages"] = messages
    if "max_tokens" in params:
        result["max_tokens"] = _integer(params["max_tokens"], f"{path}.max_tokens", out, minimum=1)
    if "temperature" in params:
        value = params["temperature"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
            out.add(f"{path}.temperature", "must be a number from 0 to 2")
        result["temperature"] = value
    return result


def _tool(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    _unknown(params, frozenset({"tool", "arguments"}), path, "tool", out)
    name = params.get("tool")
    if name is None:
        out.add(f"{path}.tool", "a tool step needs `tool`, the name of a registered tool")
    elif not isinstance(name, str) or not TOOL_ID.fullmatch(name.removeprefix("tools/")):
        out.add(f"{path}.tool", "must be a tool name: a lowercase letter, then letters, digits or '-'")
    arguments = params.get("arguments", {})
    if not isinstance(arguments, Mapping):
        out.add(f"{path}.arguments", "must be an object")
        arguments = {}
    return {"tool": name, "arguments": dict(arguments)}


def _memory(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    op = params.get("op")
    if op not in _MEMORY_FIELDS:
        out.add(f"{path}.op", f"a memory step needs `op`, one of {', '.join(_MEMORY_FIELDS)}")
        return {"op": op}
    required, optional = _MEMORY_FIELDS[op]
    _unknown(params, required | optional | {"op"}, path, f"memory {op}", out)
    result: dict[str, Any] = {"op": op}
    for key in sorted(required - set(params)):
        out.add(f"{path}.{key}", f"a memory {op} step needs `{key}`")
    for key in sorted((required | optional) & set(params)):
        value, where = params[key], f"{path}.{key}"
        if key in _MEMORY_STRINGS:
            _string(value, where, out)
        elif key == "labels":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                out.add(where, "must be an object of string values")
        elif key == "metadata":
            if not isinstance(value, Mapping):
                out.add(where, "must be an object")
        else:
            value = _integer(value, where, out, minimum=1 if key == "top_k" else 0)
        result[key] = value
    return result


def _agent(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    _unknown(params, frozenset({"agent", "input"}), path, "agent", out)
    name = params.get("agent")
    if not isinstance(name, str) or not AGENT_NAME.fullmatch(name):
        out.add(f"{path}.agent", "an agent step needs `agent`, the name of an agent of catalog/agents")
    if "input" not in params:
        out.add(f"{path}.input", "an agent step needs `input`, the first user message (may be a template)")
    else:
        _string(params["input"], f"{path}.input", out)
    return {"agent": name, "input": params.get("input")}


def _value(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    _unknown(params, frozenset({"value", "require", "message"}), path, "value", out)
    result: dict[str, Any] = {"value": params.get("value")}
    if "require" in params:
        require = params["require"]
        if isinstance(require, bool) or (isinstance(require, str) and require.strip()):
            result["require"] = require
        else:
            out.add(f"{path}.require", "must be a boolean or a non-empty template")
    if "message" in params and _string(params["message"], f"{path}.message", out):
        result["message"] = params["message"]
    return result


def _workflow(params: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    _unknown(params, frozenset({"workflow", "input"}), path, "workflow", out)
    ref = params.get("workflow")
    if not isinstance(ref, str) or not WORKFLOW_REF.fullmatch(ref):
        out.add(f"{path}.workflow", "must be a workflow id, with an optional version: <id> or <id>@<version>")
    run_input = params.get("input", {})
    if not isinstance(run_input, Mapping):
        out.add(f"{path}.input", "must be an object: the sub-workflow's input (values may be templates)")
        run_input = {}
    return {"workflow": ref, "input": dict(run_input)}


def _number(value: Any, field: str, out: Violations, low: float, high: float, *, open_low: bool) -> bool:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok:
        ok = (low < value if open_low else low <= value) and value <= high
    if not ok:
        bound = f"above {low}" if open_low else f"at least {low}"
        out.add(field, f"must be a number {bound} and at most {high}")
    return ok


def _retry(value: Any, path: str, out: Violations) -> dict[str, Any] | None:
    """A step's retry policy, normalised with every default filled in (so the plan hash says it all).

    `max_attempts` (1..100, default 1 = no retry), `initial_backoff_seconds` (> 0, default 1),
    `max_backoff_seconds` (>= initial, default 30), `multiplier` (1..10, default 2), `jitter` (0..1, default
    0.2: each wait is reduced by up to that fraction at random), `retry_on` (gRPC code names, default
    UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED; a step timeout is DEADLINE_EXCEEDED).
    """
    if not isinstance(value, Mapping):
        out.add(path, "must be an object")
        return None
    for key in sorted(set(value) - RETRY_FIELDS):
        out.add(f"{path}.{key}", f"unknown retry field (allowed: {', '.join(sorted(RETRY_FIELDS))})")
    result: dict[str, Any] = {
        "max_attempts": 1,
        "initial_backoff_seconds": 1.0,
        "max_backoff_seconds": 30.0,
        "multiplier": 2.0,
        "jitter": 0.2,
        "retry_on": list(DEFAULT_RETRY_ON),
    }
    ok = True
    if "max_attempts" in value:
        attempts = value["max_attempts"]
        if isinstance(attempts, float) and attempts.is_integer():
            attempts = int(attempts)  # a Struct (JSON) definition carries every number as a double
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
            out.add(f"{path}.max_attempts", "must be an integer from 1 to 100")
            ok = False
        else:
            result["max_attempts"] = attempts
    limits = {
        "initial_backoff_seconds": (0.0, 3600.0, True),
        "max_backoff_seconds": (0.0, 86_400.0, True),
        "multiplier": (1.0, 10.0, False),
        "jitter": (0.0, 1.0, False),
    }
    for key, (low, high, open_low) in limits.items():
        if key in value:
            if _number(value[key], f"{path}.{key}", out, low, high, open_low=open_low):
                result[key] = float(value[key])
            else:
                ok = False
    if result["max_backoff_seconds"] < result["initial_backoff_seconds"]:
        out.add(f"{path}.max_backoff_seconds", "must not be below initial_backoff_seconds")
        ok = False
    if "retry_on" in value:
        codes = value["retry_on"]
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            out.add(f"{path}.retry_on", "must be a list of gRPC code names")
            ok = False
        else:
            bad = sorted({c for c in codes if c not in GRPC_CODES})
            if bad:
                out.add(f"{path}.retry_on", f"unknown gRPC code names: {', '.join(bad)}")
                ok = False
            result["retry_on"] = sorted(set(codes))
    return result if ok else None


_NORMALIZERS: dict[StepKind, Callable[[Mapping[str, Any], str, Violations], dict[str, Any]]] = {
    StepKind.MODEL: _model,
    StepKind.TOOL: _tool,
    StepKind.MEMORY: _memory,
    StepKind.AGENT: _agent,
    StepKind.VALUE: _value,
    StepKind.WORKFLOW: _workflow,
}


def normalize_params(kind: StepKind, step: Mapping[str, Any], path: str, out: Violations) -> dict[str, Any]:
    """Checks a step's kind-specific fields (reporting into `out`) and returns their normalised form.

    `timeout_seconds`, valid on every kind, bounds each attempt of the step's call, and `retry` (see
    `_retry`) says how failed attempts are retried; `when` (a boolean or a template evaluated when the
    step's needs are met) skips the step when false. All three travel with the params, and so do:
    `on_error: continue` (a failure settles the step as FAILED, with `steps.<id>.status` and `.error` in the
    scope of later steps, instead of failing the run) and `join: any` (the step is skipped only when every
    need was skipped, instead of when any was).
    """
    params = _NORMALIZERS[kind](step, path, out)
    for key, allowed, default in (("on_error", ON_ERROR, "fail"), ("join", JOINS, "all")):
        if key not in step:
            continue
        if step[key] not in allowed:
            out.add(f"{path}.{key}", f"must be one of {', '.join(allowed)}")
        elif step[key] != default:
            params[key] = step[key]
    if "when" in step:
        when = step["when"]
        if isinstance(when, bool) or (isinstance(when, str) and when.strip()):
            params["when"] = when
        else:
            out.add(f"{path}.when", "must be a boolean or a non-empty template such as '{{ input.enabled }}'")
    if "retry" in step:
        retry = _retry(step["retry"], f"{path}.retry", out)
        if retry is not None:
            params["retry"] = retry
    if "timeout_seconds" in step:
        value = step["timeout_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86_400:
            out.add(f"{path}.timeout_seconds", "must be a number of seconds above 0 and at most 86400")
        else:
            params["timeout_seconds"] = value
    return params
