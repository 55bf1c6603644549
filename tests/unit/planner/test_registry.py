from __future__ import annotations

from pathlib import Path

import pytest
from agentflow_planner.registry import WorkflowRegistry, parse_workflow_name, validate
from agentflow_runtime.errors import AlreadyExists, InvalidArgument, NotFound

CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "workflows"


def simple(workflow_id: str) -> dict[str, object]:
    return {"id": workflow_id, "steps": [{"id": "a", "kind": "model", "prompt": "hello"}]}


async def test_create_get_and_compile(registry: WorkflowRegistry) -> None:
    created = await registry.create("acme", (CATALOG / "demo.yaml").read_text())
    assert (created.workflow_id, created.version, created.display_name) == (
        "demo",
        1,
        "Draft, count, remember, recall",
    )
    fetched = await registry.get("acme", "demo")
    assert fetched == created
    assert (await registry.get("acme", "demo", 1)).plan_hash == created.plan_hash
    plan = await registry.compile("acme", "demo")
    assert plan.plan_hash == created.plan_hash
    assert plan.workflow_version == 1
    assert [s.id for s in plan.steps] == ["draft", "wordcount", "remember", "recall"]


async def test_create_twice_is_already_exists(registry: WorkflowRegistry) -> None:
    await registry.create("acme", simple("one"))
    with pytest.raises(AlreadyExists):
        await registry.create("acme", simple("one"))
    other = await registry.create("globex", simple("one"))
    assert other.version == 1


async def test_workflow_id_overrides_the_definition_id(registry: WorkflowRegistry) -> None:
    created = await registry.create("acme", simple("one"), workflow_id="renamed", display_name="Shown")
    assert created.workflow_id == "renamed"
    assert created.display_name == "Shown"
    assert created.plan["workflow"] == "workflows/renamed"
    with pytest.raises(InvalidArgument):
        await registry.create("acme", simple("one"), workflow_id="Bad Id")


async def test_invalid_definition_lists_every_violation(registry: WorkflowRegistry) -> None:
    with pytest.raises(InvalidArgument) as info:
        await registry.create("acme", {"id": "x", "steps": [{"id": "a", "kind": "tool"}, {"id": "a"}]})
    assert {field for field, _ in info.value.violations} == {"steps[0].tool", "steps[1].id", "steps[1].kind"}


async def test_tenants_are_isolated(registry: WorkflowRegistry) -> None:
    await registry.create("acme", simple("secret"))
    with pytest.raises(NotFound):
        await registry.get("globex", "secret")
    with pytest.raises(NotFound):
        await registry.get("acme", "secret", version=2)
    assert await registry.list_page("globex", 0, 10) == ([], False)


async def test_list_pages_newest_first(registry: WorkflowRegistry) -> None:
    for name in ("w-one", "w-two", "w-three"):
        await registry.create("acme", simple(name))
    first, more = await registry.list_page("acme", 0, 2)
    assert [w.workflow_id for w in first] == ["w-three", "w-two"]
    assert more
    second, more = await registry.list_page("acme", 2, 2)
    assert [w.workflow_id for w in second] == ["w-one"]
    assert not more


async def test_seed_is_idempotent(registry: WorkflowRegistry, tmp_path: Path) -> None:
    catalog = tmp_path / "workflows"
    catalog.mkdir()
    (catalog / "demo.yaml").write_text((CATALOG / "demo.yaml").read_text())
    (catalog / "broken.yaml").write_text("id: broken\nsteps: [{id: a}]\n")
    assert await registry.seed("default", catalog) == ["demo"]
    assert await registry.seed("default", catalog) == []
    page, _ = await registry.list_page("default", 0, 10)
    assert [w.workflow_id for w in page] == ["demo"]
    assert await registry.seed("default", tmp_path / "missing") == []


def test_validate_never_raises() -> None:
    assert validate(None).violations[0].field == "source"
    checked = validate("id: x\nsteps: [{id: a, kind: model}]")
    assert checked.plan is None
    assert [v.field for v in checked.violations] == ["steps[0].prompt"]
    assert validate(simple("ok")).plan is not None


def test_workflow_names() -> None:
    assert parse_workflow_name("workflows/demo") == "demo"
    for bad in ("demo", "workflows/", "runs/demo", "workflows/Demo"):
        with pytest.raises(InvalidArgument):
            parse_workflow_name(bad)
