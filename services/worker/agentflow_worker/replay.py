"""Replay: compare a finished run's journal with a plan, calling nothing (every side effect suppressed).

Each step of the plan is given the input it would get now, rendered from the run input and the journaled
outputs of its upstream steps, and its digest is compared with the `input_digest` journaled when the step ran.
A run whose workflow changed since is reported (plan hash, and which steps would now get other inputs, were
added, removed or changed kind): it is never re-run against a journal it no longer matches.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentflow_runtime import templates

from agentflow_worker.inputs import input_digest, scope, tolerated_failures
from agentflow_worker.model import Plan, RunRecord, StepState


class Verdict(enum.StrEnum):
    MATCH = "MATCH"
    INPUT_CHANGED = "INPUT_CHANGED"
    ADDED = "ADDED"
    REMOVED = "REMOVED"
    KIND_CHANGED = "KIND_CHANGED"
    NOT_RUN = "NOT_RUN"


@dataclass(frozen=True)
class StepVerdict:
    step_id: str
    verdict: Verdict
    detail: str = ""


@dataclass(frozen=True)
class ReplayReport:
    journaled_plan_hash: str
    replayed_plan_hash: str
    replayed_workflow_version: int
    steps: tuple[StepVerdict, ...]

    @property
    def matches(self) -> bool:
        same_plan = self.journaled_plan_hash == self.replayed_plan_hash
        return same_plan and all(s.verdict in (Verdict.MATCH, Verdict.NOT_RUN) for s in self.steps)


def replay(run: RunRecord, plan: Plan, digests: Mapping[str, str]) -> ReplayReport:
    """`digests`: the journaled `input_digest` of each step that succeeded."""
    journaled = {s.id: s for s in run.plan.steps}
    tolerated = tolerated_failures(run)
    outputs: dict[str, Any] = {
        r.step_id: r.output
        for r in run.steps
        if r.state in (StepState.SUCCEEDED, StepState.SKIPPED) or r.step_id in tolerated
    }
    needs = {s.id: s.needs for s in plan.steps}
    verdicts: list[StepVerdict] = []
    for step in plan.steps:
        before = journaled.get(step.id)
        if before is None:
            verdicts.append(StepVerdict(step.id, Verdict.ADDED, "not in the journaled plan"))
        elif before.kind != step.kind:
            verdicts.append(StepVerdict(step.id, Verdict.KIND_CHANGED, f"{before.kind} -> {step.kind}"))
        elif step.id not in digests:
            verdicts.append(StepVerdict(step.id, Verdict.NOT_RUN, "no journaled result to compare"))
        else:
            # What the step saw when it ran: the results of its ancestors only (an fsm's `states.<name>` is
            # the latest visit *before* the step, not the last one of the run).
            seen = {sid: outputs[sid] for sid in _ancestors(step.id, needs) if sid in outputs}
            verdicts.append(_compare(run, step.id, step.params, seen, digests[step.id]))
    replayed = {s.id for s in plan.steps}
    verdicts += [
        StepVerdict(sid, Verdict.REMOVED, "not in the replayed plan")
        for sid in journaled
        if sid not in replayed
    ]
    return ReplayReport(run.plan_hash, plan.plan_hash, plan.workflow_version, tuple(verdicts))


def _compare(
    run: RunRecord, step_id: str, params: dict[str, Any], outputs: Mapping[str, Any], journaled: str
) -> StepVerdict:
    try:
        rendered = templates.render(params, scope(run, outputs))
    except templates.TemplateError as exc:
        return StepVerdict(step_id, Verdict.INPUT_CHANGED, f"its input no longer renders: {exc}")
    if input_digest(rendered) == journaled:
        return StepVerdict(step_id, Verdict.MATCH)
    return StepVerdict(step_id, Verdict.INPUT_CHANGED, "it would get a different input than it had")


def _ancestors(step_id: str, needs: Mapping[str, tuple[str, ...]]) -> set[str]:
    found: set[str] = set()
    pending = list(needs.get(step_id, ()))
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(needs.get(current, ()))
    return found
