from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentflow_planner.compiler import canonical_json, compile_plan, plan_from_dict
from agentflow_planner.definition import parse_definition
from agentflow_planner.graph import topological_order

DEMO = Path(__file__).resolve().parents[3] / "catalog" / "workflows" / "demo.yaml"


def reorder_keys(value: Any) -> Any:
    """The same data with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reorder_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reorder_keys(item) for item in value]
    return value


def test_topological_order_breaks_ties_by_definition_order() -> None:
    needs = {"e": ["a"], "d": [], "c": ["d", "e"], "a": [], "b": ["a"]}
    assert topological_order(["e", "d", "c", "a", "b"], needs) == ["d", "a", "e", "c", "b"]


def test_plan_steps_follow_needs() -> None:
    definition = parse_definition(
        {
            "id": "diamond",
            "steps": [
                {"id": "join", "kind": "tool", "tool": "t", "needs": ["right", "left"]},
                {"id": "left", "kind": "tool", "tool": "t", "needs": ["root"]},
                {"id": "right", "kind": "tool", "tool": "t", "needs": ["root"]},
                {"id": "root", "kind": "model", "prompt": "go"},
            ],
        }
    )
    plan = compile_plan(definition, version=2)
    assert [s.id for s in plan.steps] == ["root", "left", "right", "join"]
    assert plan.steps[-1].needs == ("left", "right")
    assert plan.workflow == "workflows/diamond"
    assert plan.workflow_version == 2


def test_hash_is_stable_across_key_order_and_sources() -> None:
    original = parse_definition(DEMO.read_text())
    reordered = parse_definition(json.dumps(reorder_keys(original.document), indent=3))
    as_floats = json.loads(json.dumps(original.document).replace('"max_tokens": 200', '"max_tokens": 200.0'))
    plans = [compile_plan(d, 1) for d in (original, reordered, parse_definition(as_floats))]
    assert len({p.plan_hash for p in plans}) == 1
    assert len(plans[0].plan_hash) == 64
    assert compile_plan(original, 7).plan_hash == plans[0].plan_hash


def test_hash_changes_with_meaning() -> None:
    document = parse_definition(DEMO.read_text()).document
    changed = json.loads(json.dumps(document))
    changed["steps"][0]["prompt"] = "Something else about {{ input.topic }}"
    assert (
        compile_plan(parse_definition(changed)).plan_hash
        != compile_plan(parse_definition(document)).plan_hash
    )
    renamed = compile_plan(parse_definition(document), workflow_id="other")
    assert renamed.plan_hash != compile_plan(parse_definition(document)).plan_hash
    assert renamed.workflow == "workflows/other"


def test_plan_round_trips_through_json() -> None:
    plan = compile_plan(parse_definition(DEMO.read_text()), 1)
    assert plan_from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_canonical_json_is_compact_and_sorted() -> None:
    assert (
        canonical_json({"b": 1.0, "a": [2.5, {"d": None, "c": "é"}]})
        == '{"a":[2.5,{"c":"é","d":null}],"b":1}'
    )
