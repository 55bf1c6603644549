from __future__ import annotations

import pytest
from agentflow_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.spec import ORIGIN_API, ORIGIN_CATALOG, Limits, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.store import ToolStore
from sqlalchemy.ext.asyncio import AsyncEngine


def tool(tool_id: str, **changes: object) -> ToolSpec:
    fields: dict[str, object] = {
        "tool_id": tool_id,
        "description": f"the {tool_id} tool",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "process": ProcessSpec(command=("echo", tool_id), env={"A": "1"}),
        "limits": Limits(wall_time_seconds=5, cpu_seconds=2, memory_bytes=1 << 28, output_bytes=4096),
    }
    fields.update(changes)
    return ToolSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def registry(engine: AsyncEngine) -> Registry:
    catalog = [tool("catalog-b", origin=ORIGIN_CATALOG), tool("catalog-y", origin=ORIGIN_CATALOG)]
    return Registry(ToolStore(engine), catalog)


async def test_create_get_delete(registry: Registry) -> None:
    created = await registry.create("acme", tool("alpha"))
    assert created.origin == ORIGIN_API
    assert created.create_time is not None
    fetched = await registry.get("acme", "alpha")
    assert fetched == created
    await registry.delete("acme", "alpha")
    with pytest.raises(NotFound):
        await registry.get("acme", "alpha")
    with pytest.raises(NotFound):
        await registry.delete("acme", "alpha")


async def test_tools_are_tenant_scoped_and_catalog_tools_global(registry: Registry) -> None:
    await registry.create("acme", tool("alpha"))
    with pytest.raises(NotFound):
        await registry.get("other", "alpha")
    await registry.create("other", tool("alpha"))
    assert (await registry.get("other", "catalog-b")).origin == ORIGIN_CATALOG
    assert (await registry.get("acme", "catalog-b")).create_time is not None


async def test_duplicates_are_refused(registry: Registry) -> None:
    await registry.create("acme", tool("alpha"))
    with pytest.raises(AlreadyExists):
        await registry.create("acme", tool("alpha"))
    with pytest.raises(AlreadyExists):
        await registry.create("acme", tool("catalog-b"))


async def test_catalog_tools_cannot_be_deleted(registry: Registry) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await registry.delete("acme", "catalog-b")
    assert caught.value.reason == "CATALOG_TOOL"


async def test_invalid_tools_list_every_problem(registry: Registry) -> None:
    bad = tool(
        "Bad",
        description=" ",
        process=ProcessSpec(command=()),
        limits=Limits(wall_time_seconds=-1, cpu_seconds=0, memory_bytes=-5, output_bytes=1 << 40),
    )
    with pytest.raises(InvalidArgument) as caught:
        await registry.create("acme", bad)
    assert {f for f, _ in caught.value.violations} == {
        "tool_id",
        "tool.description",
        "tool.process.command",
        "tool.profile.wall_time_seconds",
        "tool.profile.memory_bytes",
        "tool.profile.output_bytes",
    }


async def test_list_is_in_name_order_with_offset_pages(registry: Registry) -> None:
    for name in ("delta", "alpha", "zulu", "catalog-c", "mike"):
        await registry.create("acme", tool(name))
    await registry.create("other", tool("bravo"))
    names: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page, offset = await registry.list("acme", offset, 2)
        assert len(page) <= 2
        names.extend(t.tool_id for t in page)
        pages += 1
    assert names == ["alpha", "catalog-b", "catalog-c", "catalog-y", "delta", "mike", "zulu"]
    assert pages == 4
    page, offset = await registry.list("empty", 0, 50)
    assert [t.tool_id for t in page] == ["catalog-b", "catalog-y"]
    assert offset is None
