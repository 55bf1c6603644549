"""Approval policies (`catalog/policies/*.yaml`): which calls need a person's approval before they run.

A policy file holds rules; a rule matches a call when every criterion it sets matches (a list criterion
matches when any of its entries does):

- `workflows`, `steps`, `tools`, `agents`, `models`: globs (`fnmatch`) on the workflow id, the step id, the
  tool id, the agent making the call, the model alias;
- `arguments`: checks on the call's arguments, all of which must hold; each names a `path` (`env`,
  `target.host`, `hosts[0]`, `hosts[*].name`, with or without a leading `$.`) and one of `regex` (searched),
  `glob` or `equals`; a path that finds nothing does not match;
- `min_cost_usd`: the call's estimated cost (the planner's estimate of a model step) is at least this.

The engine asks `PolicySet.match` before the call of each tool and model step; the agent loop asks it before
each tool call an agent makes (`agent` set). The first matching rule, by file name then rule order, decides
who may approve (`approvers`, roles from the caller's token), how long the ticket stays open (`ttl_seconds`)
and what its expiry does (`on_expiry`: `fail`, `reject` or `approve`).

Everything is checked when the worker starts: a bad file stops it with an error naming the file and field.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "APPROVER_ROLES",
    "ON_EXPIRY",
    "ArgumentCheck",
    "GateCall",
    "PolicyError",
    "PolicySet",
    "Rule",
    "load_policies",
    "parse_policy",
]

APPROVER_ROLES = ("admin", "developer")
"""Roles that may decide tickets (the edge lets viewers read only, so a viewer can never decide)."""
ON_EXPIRY = ("fail", "reject", "approve")
DEFAULT_TTL_SECONDS = 86_400
_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
_GLOBS = ("workflows", "steps", "tools", "agents", "models")
_MATCH_KEYS = frozenset({*_GLOBS, "arguments", "min_cost_usd"})
_RULE_KEYS = frozenset({"id", "description", "match", "approvers", "ttl_seconds", "on_expiry"})
_POLICY_KEYS = frozenset({"id", "description", "rules"})
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class GateCall:
    """A call about to be made, as the policies see it."""

    kind: str
    """`tool` or `model` (a tool step, an agent's tool call, a model step)."""
    workflow: str
    """The workflow id (without `workflows/`)."""
    step_id: str
    tool: str = ""
    agent: str = ""
    """The agent making the call (agent tool calls only)."""
    model: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0
    """The call's estimated cost, when known."""

    def describe(self) -> dict[str, Any]:
        """What a ticket shows the approver."""
        out: dict[str, Any] = {"kind": self.kind, "workflow": self.workflow, "step_id": self.step_id}
        for key in ("tool", "agent", "model"):
            if value := getattr(self, key):
                out[key] = value
        out["arguments"] = dict(self.arguments)
        out["estimated_cost_usd"] = self.cost_usd
        return out


@dataclass(frozen=True)
class ArgumentCheck:
    path: tuple[str | int, ...]
    """Keys and indexes; `*` is every item of a list (or value of a mapping)."""
    regex: re.Pattern[str] | None = None
    glob: str | None = None
    equals: Any = None
    has_equals: bool = False

    def holds(self, arguments: Mapping[str, Any]) -> bool:
        return any(self._matches(value) for value in _lookup(arguments, self.path))

    def _matches(self, value: Any) -> bool:
        if self.has_equals:
            return bool(value == self.equals)
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if self.regex is not None:
            return self.regex.search(text) is not None
        return self.glob is not None and fnmatch.fnmatchcase(text, self.glob)


@dataclass(frozen=True)
class Rule:
    policy: str
    id: str
    description: str
    globs: Mapping[str, tuple[str, ...]]
    arguments: tuple[ArgumentCheck, ...]
    min_cost_usd: float | None
    approvers: tuple[str, ...]
    ttl_seconds: float
    on_expiry: str

    @property
    def name(self) -> str:
        """`{policy}/{rule}`, as tickets show it."""
        return f"{self.policy}/{self.id}"

    def matches(self, call: GateCall) -> bool:
        values = {
            "workflows": call.workflow,
            "steps": call.step_id,
            "tools": call.tool,
            "agents": call.agent,
            "models": call.model,
        }
        for key, patterns in self.globs.items():
            value = values[key]
            if not value or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                return False
        if self.min_cost_usd is not None and call.cost_usd < self.min_cost_usd:
            return False
        return all(check.holds(call.arguments) for check in self.arguments)

    def may_match_step(self, kind: str, workflow: str, step_id: str, cost_usd: float) -> bool:
        """Whether this rule could match the call of a `kind` step, judged before its arguments are
        rendered (so that steps no rule can gate cost nothing)."""
        if "agents" in self.globs or ("tools" in self.globs and kind != "tool"):
            return False
        if "models" in self.globs and kind != "model":
            return False
        for key, value in (("workflows", workflow), ("steps", step_id)):
            if key in self.globs and not any(fnmatch.fnmatchcase(value, p) for p in self.globs[key]):
                return False
        return self.min_cost_usd is None or cost_usd >= self.min_cost_usd


@dataclass(frozen=True)
class PolicySet:
    rules: tuple[Rule, ...] = ()

    def match(self, call: GateCall) -> Rule | None:
        """The first rule that asks for approval of `call`, or None when it may run."""
        return next((rule for rule in self.rules if rule.matches(call)), None)

    def may_gate_step(self, kind: str, workflow: str, step_id: str, cost_usd: float) -> bool:
        """Whether any rule could match the call of a tool or model step (see `Rule.may_match_step`)."""
        return any(rule.may_match_step(kind, workflow, step_id, cost_usd) for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)


def load_policies(directory: Path) -> PolicySet:
    """Every rule of `directory/*.yaml`, by file name; no directory means no rules."""
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            policy_rules = parse_policy(text, str(path), default_id=path.stem)
            for rule in policy_rules:
                if rule.policy in seen and seen[rule.policy] != path:
                    raise PolicyError(
                        f"{path}: id: policy {rule.policy!r} is also defined in {seen[rule.policy]}"
                    )
                seen[rule.policy] = path
            rules.extend(policy_rules)
    return PolicySet(tuple(rules))


def parse_policy(text: str, where: str, default_id: str = "") -> list[Rule]:
    """The rules of one policy document; PolicyError naming `where` and the field otherwise."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: a policy is a mapping with `rules`")
    _no_unknown(data, _POLICY_KEYS, where, "")
    policy_id = data.get("id", default_id)
    if not isinstance(policy_id, str) or not _ID.fullmatch(policy_id):
        raise PolicyError(f"{where}: id: must be lowercase letters, digits and '-' (got {policy_id!r})")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{where}: rules: a non-empty list of rules is required")
    rules = [_rule(raw, policy_id, where, f"rules[{i}]") for i, raw in enumerate(raw_rules)]
    ids = [r.id for r in rules]
    for i, rule_id in enumerate(ids):
        if rule_id in ids[:i]:
            raise PolicyError(f"{where}: rules[{i}].id: {rule_id!r} is used by an earlier rule")
    return rules


def _rule(raw: Any, policy: str, where: str, at: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: {at}: a rule is a mapping")
    _no_unknown(raw, _RULE_KEYS, where, at)
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
        raise PolicyError(f"{where}: {at}.id: required, lowercase letters, digits and '-' (got {rule_id!r})")
    match = raw.get("match")
    if not isinstance(match, dict) or not match:
        raise PolicyError(f"{where}: {at}.match: required, a mapping with at least one criterion")
    _no_unknown(match, _MATCH_KEYS, where, f"{at}.match")
    globs: dict[str, tuple[str, ...]] = {}
    for key in _GLOBS:
        if key in match:
            globs[key] = _strings(match[key], where, f"{at}.match.{key}")
    checks = match.get("arguments", [])
    if not isinstance(checks, list):
        raise PolicyError(f"{where}: {at}.match.arguments: a list of {{path, regex|glob|equals}}")
    arguments = tuple(_check(c, where, f"{at}.match.arguments[{i}]") for i, c in enumerate(checks))
    min_cost = match.get("min_cost_usd")
    if min_cost is not None and (
        isinstance(min_cost, bool) or not isinstance(min_cost, int | float) or min_cost < 0
    ):
        raise PolicyError(f"{where}: {at}.match.min_cost_usd: a number of US dollars, not negative")
    approvers = _strings(raw.get("approvers", ["admin"]), where, f"{at}.approvers")
    for role in approvers:
        if role not in APPROVER_ROLES:
            raise PolicyError(
                f"{where}: {at}.approvers: {role!r} cannot decide tickets "
                f"(one of {', '.join(APPROVER_ROLES)})"
            )
    ttl = raw.get("ttl_seconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise PolicyError(f"{where}: {at}.ttl_seconds: a positive number of seconds")
    on_expiry = raw.get("on_expiry", "fail")
    if on_expiry not in ON_EXPIRY:
        raise PolicyError(f"{where}: {at}.on_expiry: one of {', '.join(ON_EXPIRY)} (got {on_expiry!r})")
    return Rule(
        policy=policy,
        id=rule_id,
        description=str(raw.get("description") or ""),
        globs=globs,
        arguments=arguments,
        min_cost_usd=None if min_cost is None else float(min_cost),
        approvers=approvers,
        ttl_seconds=float(ttl),
        on_expiry=str(on_expiry),
    )


def _check(raw: Any, where: str, at: str) -> ArgumentCheck:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: {at}: a mapping {{path, regex|glob|equals}}")
    _no_unknown(raw, frozenset({"path", "regex", "glob", "equals"}), where, at)
    path = _path(raw.get("path"), where, f"{at}.path")
    tests = [k for k in ("regex", "glob", "equals") if k in raw]
    if len(tests) != 1:
        raise PolicyError(f"{where}: {at}: exactly one of regex, glob, equals")
    if "regex" in raw:
        if not isinstance(raw["regex"], str):
            raise PolicyError(f"{where}: {at}.regex: a string")
        try:
            return ArgumentCheck(path, regex=re.compile(raw["regex"]))
        except re.error as exc:
            raise PolicyError(f"{where}: {at}.regex: not a valid regular expression: {exc}") from None
    if "glob" in raw:
        if not isinstance(raw["glob"], str):
            raise PolicyError(f"{where}: {at}.glob: a string")
        return ArgumentCheck(path, glob=raw["glob"])
    return ArgumentCheck(path, equals=raw["equals"], has_equals=True)


def _path(raw: Any, where: str, at: str) -> tuple[str | int, ...]:
    if not isinstance(raw, str) or not raw.strip():
        raise PolicyError(f"{where}: {at}: required, like `env`, `target.host` or `hosts[*].name`")
    text = raw.strip().removeprefix("$").removeprefix(".")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        found = _PATH_PART.match(text, pos)
        if found is None:
            raise PolicyError(f"{where}: {at}: cannot read {raw!r} at position {pos}")
        key, index = found.groups()
        parts.append(key if key is not None else ("*" if index == "*" else int(index)))
        pos = found.end()
    if not parts:
        raise PolicyError(f"{where}: {at}: required, like `env`, `target.host` or `hosts[*].name`")
    return tuple(parts)


def _lookup(value: Any, path: Sequence[str | int]) -> Iterator[Any]:
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "*":
        items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
        for item in items:
            yield from _lookup(item, rest)
    elif isinstance(head, int):
        if isinstance(value, list) and -len(value) <= head < len(value):
            yield from _lookup(value[head], rest)
    elif isinstance(value, Mapping) and head in value:
        yield from _lookup(value[head], rest)


def _strings(raw: Any, where: str, at: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and s for s in raw):
        raise PolicyError(f"{where}: {at}: a non-empty list of strings")
    return tuple(raw)


def _no_unknown(data: Mapping[str, Any], known: frozenset[str], where: str, at: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{at}." if at else ""
        raise PolicyError(
            f"{where}: {prefix}{unknown[0]}: unknown field (expected one of {', '.join(sorted(known))})"
        )
