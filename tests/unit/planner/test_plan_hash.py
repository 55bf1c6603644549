"""The plan hash of every workflow kind: the same definition in any key order (YAML or JSON) -> the same hash;
any change to what the plan does -> another hash."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentflow_planner.compiler import compile_plan
from agentflow_planner.definition import parse_definition
from agentflow_planner.registry import WorkflowRegistry

CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "workflows"
KINDS = ["demo.yaml", "fan-out.yaml", "fsm-review.yaml", "bt-summary.yaml"]


def shuffled(value: Any, rng: random.Random) -> Any:
    """`value` with the keys of every mapping in a random order (lists keep theirs: their order matters)."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


def plan_hash(source: Any) -> str:
    return compile_plan(parse_definition(source)).plan_hash


@pytest.mark.parametrize("name", KINDS)
def test_any_key_order_and_either_syntax_give_the_same_hash(name: str) -> None:
    text = (CATALOG / name).read_text()
    document = yaml.safe_load(text)
    expected = plan_hash(text)
    for seed in range(8):
        variant = shuffled(document, random.Random(seed))
        assert list(variant) != list(document) or seed > 0 or len(document) < 2
        assert plan_hash(variant) == expected
        assert plan_hash(json.dumps(variant, indent=1)) == expected
        assert plan_hash(yaml.safe_dump(variant, sort_keys=False)) == expected
    # Integral floats and ints are the same number.
    floats = json.loads(json.dumps(document), parse_int=float)
    assert plan_hash(floats) == expected


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("fsm-review.yaml", lambda d: d.update(max_transitions=5)),
        ("fsm-review.yaml", lambda d: d["states"]["review"]["transitions"][1].update(to="publish")),
        ("fsm-review.yaml", lambda d: d["states"]["review"]["transitions"][0].update(when="{{ true }}")),
        ("bt-summary.yaml", lambda d: d["root"]["sequence"][1]["selector"].reverse()),
        ("bt-summary.yaml", lambda d: d["root"]["sequence"][2].update(success="one")),
        (
            "bt-summary.yaml",
            lambda d: d["root"]["sequence"][1]["selector"][1]["retry"].update(max_attempts=2),
        ),
        ("fan-out.yaml", lambda d: d["steps"][5].update(when="{{ true }}")),
        ("demo.yaml", lambda d: d["steps"][1].update(needs=["draft", "remember"])),
    ],
)
def test_a_change_in_behaviour_changes_the_hash(name: str, change: Any) -> None:
    document = yaml.safe_load((CATALOG / name).read_text())
    changed = copy.deepcopy(document)
    change(changed)
    assert plan_hash(changed) != plan_hash(document)


def test_descriptions_and_titles_are_not_part_of_the_hash() -> None:
    document = yaml.safe_load((CATALOG / "bt-summary.yaml").read_text())
    retitled = {**document, "display_name": "Other", "description": "Another text"}
    assert plan_hash(retitled) == plan_hash(document)


async def test_sub_workflow_plans_hash_the_same_in_any_key_order_and_change_with_the_pin(
    registry: WorkflowRegistry,
) -> None:
    fan_out = yaml.safe_load((CATALOG / "fan-out.yaml").read_text())
    parent = yaml.safe_load((CATALOG / "sub-research.yaml").read_text())
    await registry.create("acme", fan_out)
    hashes = set()
    for seed in range(4):
        variant = shuffled(parent, random.Random(seed))
        checked = await registry.validate("acme", variant)
        assert checked.plan is not None, checked.violations
        hashes.add(checked.plan.plan_hash)
    assert len(hashes) == 1
    await registry.update(
        "acme", "fan-out", {**fan_out, "output": {"report": "{{ steps.report.output.text }}"}}
    )
    repinned = await registry.validate("acme", parent)
    assert repinned.plan is not None
    assert repinned.plan.plan_hash not in hashes
    pinned = copy.deepcopy(parent)
    for step in pinned["steps"][:2]:
        step["workflow"] = "fan-out@1"
    checked = await registry.validate("acme", pinned)
    assert checked.plan is not None and checked.plan.plan_hash in hashes
