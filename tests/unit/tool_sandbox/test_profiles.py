"""Execution profiles: from the catalog and the API, validated, stored, updated; deny by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agentflow.tools.v1 import tools_pb2
from agentflow_runtime import context
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument
from agentflow_runtime.protojson import struct_from_dict
from agentflow_tool_sandbox.catalog import CatalogError, load_catalog
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.servicer import ToolServicer
from agentflow_tool_sandbox.spec import DEFAULT_MAX_PROCESSES, EgressRule
from agentflow_tool_sandbox.store import ExecutionStore, ToolStore
from agentflow_tool_sandbox.validation import NOTHING_DELEGATED, Delegation
from google.protobuf import field_mask_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from .test_servicer import REPO_CATALOG, FakeAudit

CTX: Any = None
ACME = context.CallContext(tenant="acme", role="developer")

PROFILED = """
id: fetch
description: Fetches.
process: {command: ["{python}", "{tool_dir}/fetch.py"], env: {MODE: fast}}
profile:
  egress: [{host: api.example.com, port: 443}, {host: 10.0.0.7, port: 8080}]
  read_only_paths: [/srv/data]
  writable_paths: [/srv/out]
  env: [API_TOKEN]
  wall_time_seconds: 5
  max_processes: 3
"""


def test_a_catalog_profile_is_read_with_the_tool_dir_readable(tmp_path: Path) -> None:
    (tmp_path / "fetch.yaml").write_text(PROFILED)
    (tool,) = load_catalog(tmp_path)
    assert tool.permissions.egress == (EgressRule("api.example.com", 443), EgressRule("10.0.0.7", 8080))
    assert tool.permissions.read_only_paths == (str(tmp_path.resolve()), "/srv/data")
    assert tool.permissions.writable_paths == ("/srv/out",)
    assert tool.permissions.env == ("API_TOKEN",)
    assert tool.limits.wall_time_seconds == 5 and tool.limits.max_processes == 3


def test_a_catalog_tool_without_a_profile_is_granted_nothing(tmp_path: Path) -> None:
    (tmp_path / "bare.yaml").write_text("id: bare\ndescription: d\nprocess: {command: [echo]}\n")
    (tool,) = load_catalog(tmp_path)
    assert (
        tool.permissions.egress == () and tool.permissions.env == () and tool.permissions.writable_paths == ()
    )
    assert tool.permissions.read_only_paths == (str(tmp_path.resolve()),)
    assert tool.limits.with_defaults().max_processes == DEFAULT_MAX_PROCESSES


def test_catalog_profile_problems_are_all_listed(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        """
id: bad
description: d
process: {command: ["true"]}
limits: {cpu_seconds: 2}
profile:
  cpu_seconds: 3
  egress: [{host: "*.example.com", port: 0}, {host: ok.example.com}, {host: a b, port: 70000}]
  read_only_paths: [relative/path, /srv/../etc, /proc/1, /, /srv//x]
  writable_paths: [/usr/local/share, /srv/ok]
  env: [AF_JWT_SECRET, 1BAD, PATH]
  max_processes: -1
  memory_bytes: 1024
  surprise: true
"""
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    fields = {field for field, _ in caught.value.problems}
    assert fields == {
        "bad.yaml:profile.cpu_seconds",  # also in `limits`
        "bad.yaml:profile.surprise",
        "bad.yaml:profile.egress[0].host",
        "bad.yaml:profile.egress[0].port",
        "bad.yaml:profile.egress[1]",
        "bad.yaml:profile.egress[2].host",
        "bad.yaml:profile.egress[2].port",
        "bad.yaml:profile.read_only_paths[0]",
        "bad.yaml:profile.read_only_paths[1]",
        "bad.yaml:profile.read_only_paths[2]",
        "bad.yaml:profile.read_only_paths[3]",
        "bad.yaml:profile.read_only_paths[4]",
        "bad.yaml:profile.writable_paths[0]",
        "bad.yaml:profile.env[0]",
        "bad.yaml:profile.env[1]",
        "bad.yaml:profile.max_processes",
        "bad.yaml:profile.memory_bytes",
    }


def test_the_repository_catalog_uses_profiles() -> None:
    for tool in load_catalog(REPO_CATALOG):
        assert tool.permissions.egress == () and tool.permissions.env == ()
        assert tool.limits.max_processes == 4


def registry_servicer(
    runner: ProcessRunner, engine: AsyncEngine, delegation: Delegation = NOTHING_DELEGATED
) -> ToolServicer:
    registry = Registry(ToolStore(engine), load_catalog(REPO_CATALOG), delegation=delegation)
    return ToolServicer(registry, Executions(runner, ExecutionStore(engine)), FakeAudit())  # type: ignore[arg-type]


def api_tool(**profile: Any) -> tools_pb2.Tool:
    return tools_pb2.Tool(
        description="fetches",
        process=tools_pb2.ProcessSpec(command=["curl"]),
        input_schema=struct_from_dict({"type": "object"}),
        profile=tools_pb2.ExecutionProfile(**profile),
    )


async def test_an_api_profile_round_trips_through_the_store(
    runner: ProcessRunner, engine: AsyncEngine
) -> None:
    servicer = registry_servicer(runner, engine, Delegation(path_roots=("/srv",), env=("API_TOKEN",)))
    tool = api_tool(
        egress=[tools_pb2.EgressRule(host="api.example.com", port=443)],
        read_only_paths=["/srv/data"],
        writable_paths=["/srv/out"],
        env=["API_TOKEN"],
        cpu_seconds=2,
        max_processes=5,
    )
    with context.bound(ACME):
        created = await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="fetch", tool=tool), CTX)
        fetched = await servicer.GetTool(tools_pb2.GetToolRequest(name="tools/fetch"), CTX)
    assert fetched == created
    profile = fetched.profile
    assert [(r.host, r.port) for r in profile.egress] == [("api.example.com", 443)]
    assert list(profile.read_only_paths) == ["/srv/data"] and list(profile.writable_paths) == ["/srv/out"]
    assert list(profile.env) == ["API_TOKEN"]
    assert profile.cpu_seconds == 2 and profile.max_processes == 5
    assert profile.wall_time_seconds == 30 and profile.output_bytes == 1024 * 1024  # defaults filled in
    assert fetched.limits.cpu_seconds == 2  # the older field mirrors the caps


async def test_an_api_tool_is_denied_what_the_operator_did_not_delegate(
    runner: ProcessRunner, engine: AsyncEngine
) -> None:
    servicer = registry_servicer(runner, engine)  # nothing delegated
    tool = api_tool(
        egress=[tools_pb2.EgressRule(host="bad host", port=99999)],
        read_only_paths=["/etc/shadow"],
        writable_paths=["/tmp/out"],
        env=["HOME", "AF_DATABASE_URL"],
    )
    with context.bound(ACME), pytest.raises(InvalidArgument) as caught:
        await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="greedy", tool=tool), CTX)
    assert {field for field, _ in caught.value.violations} == {
        "tool.profile.egress[0].host",
        "tool.profile.egress[0].port",
        "tool.profile.read_only_paths[0]",
        "tool.profile.writable_paths[0]",
        "tool.profile.env[0]",
        "tool.profile.env[1]",
    }


async def test_a_path_overlapping_a_writable_path_of_the_profile_is_refused(
    runner: ProcessRunner, engine: AsyncEngine
) -> None:
    """A writable grant must stand alone: the tool could plant a symlink in it for its other binds."""
    servicer = registry_servicer(runner, engine, Delegation(path_roots=("/srv",)))
    tool = api_tool(
        read_only_paths=["/srv/t/x", "/srv", "/srv/other", "/srv/u"],
        writable_paths=["/srv/t", "/srv/u", "/srv/w/deep", "/srv/w"],
    )
    with context.bound(ACME), pytest.raises(InvalidArgument) as caught:
        await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="nested", tool=tool), CTX)
    refused = {field: why for field, why in caught.value.violations}
    assert set(refused) == {
        "tool.profile.read_only_paths[0]",  # below writable /srv/t
        "tool.profile.read_only_paths[1]",  # contains every writable path
        "tool.profile.read_only_paths[3]",  # the same path as writable /srv/u
        "tool.profile.writable_paths[2]",  # below writable /srv/w
        "tool.profile.writable_paths[3]",  # contains writable /srv/w/deep
    }
    assert "overlaps writable_paths[0] (/srv/t)" in refused["tool.profile.read_only_paths[0]"]
    separate = api_tool(read_only_paths=["/srv/data", "/srv/t2"], writable_paths=["/srv/t", "/srv/out"])
    with context.bound(ACME):
        created = await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="apart", tool=separate), CTX)
    assert list(created.profile.writable_paths) == ["/srv/t", "/srv/out"]


async def test_older_limits_still_work_and_are_reported_as_limits(
    runner: ProcessRunner, engine: AsyncEngine
) -> None:
    servicer = registry_servicer(runner, engine)
    tool = api_tool()
    tool.ClearField("profile")
    tool.limits.CopyFrom(tools_pb2.ExecutionLimits(cpu_seconds=3))
    with context.bound(ACME):
        created = await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="old", tool=tool), CTX)
        assert created.profile.cpu_seconds == 3 and created.profile.max_processes == DEFAULT_MAX_PROCESSES
        tool.limits.memory_bytes = -1
        with pytest.raises(InvalidArgument) as caught:
            await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="older", tool=tool), CTX)
    assert [field for field, _ in caught.value.violations] == ["tool.limits.memory_bytes"]


async def test_update_tool_replaces_masked_fields_and_validates(
    runner: ProcessRunner, engine: AsyncEngine
) -> None:
    servicer = registry_servicer(runner, engine)
    with context.bound(ACME):
        await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="fetch", tool=api_tool()), CTX)
        change = api_tool(egress=[tools_pb2.EgressRule(host="api.example.com", port=443)], cpu_seconds=4)
        change.name = "tools/fetch"
        change.description = "ignored: not in the mask"
        mask = field_mask_pb2.FieldMask(paths=["profile"])
        updated = await servicer.UpdateTool(tools_pb2.UpdateToolRequest(tool=change, update_mask=mask), CTX)
        assert updated.description == "fetches"
        assert [(r.host, r.port) for r in updated.profile.egress] == [("api.example.com", 443)]
        assert updated.profile.cpu_seconds == 4
        fetched = await servicer.GetTool(tools_pb2.GetToolRequest(name="tools/fetch"), CTX)
        assert fetched == updated

        bad = api_tool(egress=[tools_pb2.EgressRule(host="api.example.com", port=0)])
        bad.name = "tools/fetch"
        with pytest.raises(InvalidArgument) as caught:
            await servicer.UpdateTool(tools_pb2.UpdateToolRequest(tool=bad), CTX)
        assert [f for f, _ in caught.value.violations] == ["tool.profile.egress[0].port"]
        assert await servicer.GetTool(tools_pb2.GetToolRequest(name="tools/fetch"), CTX) == updated

        with pytest.raises(InvalidArgument) as caught:
            bogus = field_mask_pb2.FieldMask(paths=["origin"])
            await servicer.UpdateTool(tools_pb2.UpdateToolRequest(tool=change, update_mask=bogus), CTX)
        assert [f for f, _ in caught.value.violations] == ["update_mask"]
        catalog = api_tool()
        catalog.name = "tools/ticker"
        with pytest.raises(FailedPrecondition):
            await servicer.UpdateTool(tools_pb2.UpdateToolRequest(tool=catalog), CTX)
