"""fsm workflows: states, guarded transitions, compiled by bounded unrolling into the one plan graph.

    kind: fsm
    initial: draft               # required: the state entered first
    terminal: [done]             # required: states that end the machine (they have no transitions)
    max_transitions: 6           # required bound, 1..100: how many transitions a run may take
    states:
      draft:                     # a state is a step (any step kind; none: a value step) plus transitions
        kind: model
        prompt: "Write about {{ input.topic }}"
        transitions:
          - to: review           # no `when`: always taken (when reached; transitions are tried in order)
      review:
        kind: tool
        tool: word-count
        arguments: {text: "{{ states.draft.output.text }}"}
        transitions:
          - to: done
            when: "{{ states.review.output.words >= 5 }}"
          - to: draft
      done:
        value: "{{ states.draft.output.text }}"

Templates read `input` and `states.<name>` (the latest visit of a state: output, status, error).

Unrolling: visit `n` (after `n` transitions) is the step `<state>~<n>`, for each state the walk can
be in after exactly `n` transitions, `n` = 0..max_transitions: ids are stable (they depend only on the
definition). `<target>~<n+1>` needs the steps `<source>~<n>` that have a transition to it (`join: any`), and
its `when` is true when one of them ran and its transition is the first whose guard holds. Exactly one step
runs per visit; the others are skipped. A final value step `fsm~end` needs every step and fails the run when
no terminal state was reached (no guard held, or the bound ran out).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentflow_runtime import templates

from .step_definition import StepDefinition
from .step_params import COMMON_FIELDS, StepKind, normalize_params
from .template_checks import check_templates
from .violations import Violations

__all__ = ["END_STEP", "MAX_PLAN_STEPS", "compile_states"]

END_STEP = "fsm~end"
STATE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
MAX_TRANSITIONS = 100
MAX_PLAN_STEPS = 2000
_NOT_ON_STATES = ("id", "needs", "when", "join")


@dataclass(frozen=True)
class _Transition:
    target: str
    guard: str | None
    """The guard expression's canonical text; None: always."""


@dataclass(frozen=True)
class _State:
    name: str
    kind: StepKind
    params: dict[str, Any]
    transitions: tuple[_Transition, ...]
    description: str


def _guard(value: Any, path: str, out: Violations) -> str | None:
    """A transition guard: a boolean or exactly one `{{ expr }}`; returns its expression text."""
    if value is True:
        return None
    if value is False:
        return "false"
    if isinstance(value, str):
        try:
            node = templates.whole_expression(value)
        except templates.TemplateError:
            return None  # reported by the template checks
        if node is not None:
            return templates.to_text(node)
    out.add(path, "a guard must be a boolean or exactly one '{{ expression }}'")
    return None


def _transitions(
    raw: Any, path: str, names: set[str], out: Violations, input_fields: set[str] | None
) -> tuple[_Transition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        out.add(path, "must be a list of {to, when}")
        return ()
    found: list[_Transition] = []
    unguarded = False
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            out.add(where, "must be an object {to, when}")
            continue
        for key in sorted(set(item) - {"to", "when"}):
            out.add(f"{where}.{key}", "unknown transition field (allowed: to, when)")
        target = item.get("to")
        if not isinstance(target, str) or target not in names:
            out.add(f"{where}.to", f"unknown target state {target!r}")
            continue
        if unguarded:
            out.add(where, "never taken: an earlier transition has no guard")
        guard = None
        if "when" in item:
            check_templates(
                item["when"],
                f"{where}.when",
                out,
                upstream=None,
                input_fields=input_fields,
                known_states=names,
            )
            guard = _guard(item["when"], f"{where}.when", out)
        unguarded = unguarded or guard is None
        found.append(_Transition(target, guard))
    return tuple(found)


def _states(
    raw: Mapping[str, Any],
    names: set[str],
    terminal: set[str],
    out: Violations,
    input_fields: set[str] | None,
) -> dict[str, _State]:
    states: dict[str, _State] = {}
    for name in sorted(names):
        spec, path = raw[name], f"states.{name}"
        if not isinstance(spec, Mapping):
            out.add(path, "must be an object: a step (kind and its fields) and its transitions")
            continue
        for key in _NOT_ON_STATES:
            if key in spec:
                out.add(f"{path}.{key}", "not allowed on an fsm state (guards go on transitions)")
        kind = spec.get("kind", StepKind.VALUE.value)
        if kind not in {k.value for k in StepKind}:
            out.add(
                f"{path}.kind", f"unknown step kind {kind!r} (known: {', '.join(k.value for k in StepKind)})"
            )
            continue
        if kind == StepKind.WORKFLOW.value:
            out.add(f"{path}.kind", "a sub-workflow is a dag step; an fsm state cannot be one")
            continue
        fields = {k: v for k, v in spec.items() if k != "transitions" and k not in _NOT_ON_STATES}
        params = normalize_params(StepKind(kind), fields, path, out)
        own = {k: v for k, v in fields.items() if k not in COMMON_FIELDS}
        check_templates(own, path, out, upstream=None, input_fields=input_fields, known_states=names)
        transitions = _transitions(spec.get("transitions"), f"{path}.transitions", names, out, input_fields)
        if name in terminal and spec.get("transitions"):
            out.add(f"{path}.transitions", "a terminal state has no transitions")
        elif name not in terminal and not spec.get("transitions"):
            out.add(path, "a dead end: give it transitions or list it in `terminal`")
        description = spec.get("description", "")
        states[name] = _State(name, StepKind(kind), params, transitions, str(description))
    return states


def _bound(value: Any, out: Violations) -> int:
    if value is None:
        out.add("max_transitions", "is required: the most transitions a run may take (1-100)")
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a Struct (JSON) definition carries every number as a double
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRANSITIONS:
        out.add("max_transitions", f"must be an integer from 1 to {MAX_TRANSITIONS}")
        return 0
    return value


def _levels(states: Mapping[str, _State], initial: str, bound: int) -> list[list[str]]:
    """The states the walk can be in after exactly n transitions, n = 0..bound (each level sorted)."""
    levels = [[initial]]
    for _ in range(bound):
        targets = {t.target for name in levels[-1] for t in states[name].transitions}
        if not targets:
            break
        levels.append(sorted(targets))
    return levels


def _reachability(
    states: Mapping[str, _State], initial: str, terminal: set[str], bound: int, out: Violations
) -> None:
    """Unreachable states; with a valid `bound` (> 0), states and terminals beyond it."""
    depth = {initial: 0}
    frontier = [initial]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for transition in states[name].transitions if name in states else ():
                if transition.target not in depth:
                    depth[transition.target] = depth[name] + 1
                    following.append(transition.target)
        frontier = following
    for name in sorted(states):
        if name not in depth:
            out.add(f"states.{name}", f"unreachable from the initial state {initial!r}")
        elif bound and depth[name] > bound:
            out.add(
                f"states.{name}",
                f"first reachable after {depth[name]} transitions, beyond max_transitions ({bound})",
            )
    if bound and terminal and not any(name in depth and depth[name] <= bound for name in terminal):
        out.add("terminal", f"no terminal state is reachable within max_transitions ({bound})")


def _ran(step_id: str) -> str:
    return f'steps[{json.dumps(step_id)}].status != "SKIPPED"'


def _unroll(
    states: Mapping[str, _State], initial: str, terminal: set[str], bound: int
) -> list[StepDefinition]:
    levels = _levels(states, initial, bound)
    steps: list[StepDefinition] = []
    for n, level in enumerate(levels):
        for name in level:
            state = states[name]
            params = dict(state.params)
            needs: list[str] = []
            if n:
                arrivals: list[str] = []
                for source in levels[n - 1]:
                    source_id = f"{source}~{n - 1}"
                    earlier: list[str] = []
                    for transition in states[source].transitions:
                        if transition.target == name:
                            terms = [_ran(source_id)]
                            if transition.guard is not None:
                                terms.append(f"({transition.guard})")
                            terms += [f"not ({guard})" for guard in earlier]
                            arrivals.append(" and ".join(terms))
                            if source_id not in needs:
                                needs.append(source_id)
                        if transition.guard is None:
                            break
                        earlier.append(transition.guard)
                params["when"] = "{{ " + " or ".join(f"({a})" for a in arrivals) + " }}"
                if len(needs) > 1:
                    params["join"] = "any"
            step_id, source = f"{name}~{n}", f"states.{name}"
            steps.append(
                StepDefinition(step_id, state.kind, tuple(sorted(needs)), params, state.description, source)
            )
    reached = [_ran(step.id) for step in steps if step.id.rpartition("~")[0] in terminal]
    end = {
        "value": None,
        "require": "{{ " + " or ".join(f"({r})" for r in reached) + " }}",
        "message": f"the state machine stopped before a terminal state (no transition's guard held, or "
        f"max_transitions ({bound}) ran out)",
        "join": "any",
    }
    steps.append(StepDefinition(END_STEP, StepKind.VALUE, tuple(sorted(s.id for s in steps)), end))
    return steps


def compile_states(
    data: Mapping[str, Any], kind: str, out: Violations, input_fields: set[str] | None
) -> tuple[list[StepDefinition], dict[str, Any]]:
    """Validates an fsm definition (every problem into `out`) and unrolls it into plan steps."""
    before = len(out.items)
    raw = data.get("states")
    if not isinstance(raw, Mapping) or not raw:
        out.add("states", "is required: an object of states by name")
        raw = {}
    names: set[str] = set()
    for name in raw:
        if isinstance(name, str) and STATE_NAME.fullmatch(name):
            names.add(name)
        else:
            out.add(
                f"states.{name}",
                "a state name is lowercase letters, digits, '_' or '-', starting with a letter",
            )
    initial = data.get("initial")
    if initial is None:
        out.add("initial", "is required: the state entered first")
    elif initial not in names:
        out.add("initial", f"unknown state {initial!r}")
    terminal_raw = data.get("terminal")
    terminal: set[str] = set()
    if not isinstance(terminal_raw, list) or not terminal_raw:
        out.add("terminal", "is required: a non-empty list of the states that end the machine")
    else:
        for i, name in enumerate(terminal_raw):
            if name not in names:
                out.add(f"terminal[{i}]", f"unknown state {name!r}")
            else:
                terminal.add(name)
    bound = _bound(data.get("max_transitions"), out)
    states = _states(raw, names, terminal, out, input_fields)
    if initial in states:
        _reachability(states, initial, terminal, bound, out)
    scope: dict[str, Any] = {"known_states": names}
    if len(out.items) != before or not isinstance(initial, str):
        return [], scope
    size = sum(len(level) for level in _levels(states, initial, bound))
    if size > MAX_PLAN_STEPS:
        out.add("max_transitions", f"unrolls into {size} steps, more than {MAX_PLAN_STEPS}; lower the bound")
        return [], scope
    return _unroll(states, initial, terminal, bound), scope
