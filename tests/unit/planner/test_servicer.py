from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentflow.workflows.v1 import workflows_pb2
from agentflow_planner.registry import WorkflowRegistry
from agentflow_planner.servicer import WorkflowServicer
from agentflow_planner.store import metadata
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.db import Database
from agentflow_runtime.errors import InvalidArgument, NotFound
from agentflow_runtime.protojson import dict_from_struct, py_from_value, struct_from_dict
from google.protobuf import field_mask_pb2

NO_CONTEXT: Any = None
DEMO = (Path(__file__).resolve().parents[3] / "catalog" / "workflows" / "demo.yaml").read_text()


@pytest.fixture
async def servicer(tmp_path: Path) -> AsyncIterator[WorkflowServicer]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'planner.db'}")
    await db.create_all(metadata)
    yield WorkflowServicer(WorkflowRegistry(db), AuditSink(None))
    await db.dispose()


async def test_create_from_source_then_get_list_compile(servicer: WorkflowServicer) -> None:
    with context.bound(context.CallContext(tenant="acme")):
        created = await servicer.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=workflows_pb2.Workflow(source=DEMO)), NO_CONTEXT
        )
        assert created.name == "workflows/demo"
        assert created.version == 1
        assert dict_from_struct(created.definition)["steps"][0]["id"] == "draft"
        got = await servicer.GetWorkflow(workflows_pb2.GetWorkflowRequest(name="workflows/demo"), NO_CONTEXT)
        assert got.plan_hash == created.plan_hash
        listed = await servicer.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), NO_CONTEXT)
        assert [w.name for w in listed.workflows] == ["workflows/demo"]
        plan = await servicer.CompileWorkflow(
            workflows_pb2.CompileWorkflowRequest(name="workflows/demo"), NO_CONTEXT
        )
    assert plan.plan_hash == created.plan_hash
    assert plan.workflow == "workflows/demo" and plan.workflow_version == 1
    assert [s.kind for s in plan.steps] == [
        workflows_pb2.STEP_KIND_MODEL,
        workflows_pb2.STEP_KIND_TOOL,
        workflows_pb2.STEP_KIND_MEMORY,
        workflows_pb2.STEP_KIND_MEMORY,
    ]
    assert list(plan.steps[3].needs) == ["remember"]
    assert dict_from_struct(plan.steps[1].params)["arguments"]["text"] == "{{ steps.draft.output.text }}"
    assert py_from_value(plan.output)["words"] == "{{ steps.wordcount.output.words }}"


async def test_struct_definition_hashes_like_the_source_text(servicer: WorkflowServicer) -> None:
    with context.bound(context.CallContext(tenant="acme")):
        from_text = await servicer.ValidateWorkflow(
            workflows_pb2.ValidateWorkflowRequest(workflow=workflows_pb2.Workflow(source=DEMO)), NO_CONTEXT
        )
        # A Struct carries every number as a double: max_tokens 200 arrives as 200.0.
        struct = struct_from_dict(yaml.safe_load(DEMO))
        created = await servicer.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=workflows_pb2.Workflow(definition=struct)),
            NO_CONTEXT,
        )
    assert from_text.valid
    assert created.plan_hash == from_text.plan.plan_hash


async def test_validate_reports_violations_without_raising(servicer: WorkflowServicer) -> None:
    bad = workflows_pb2.Workflow(source="id: x\nsteps:\n  - {id: a, kind: tool, needs: [b]}\n")
    response = await servicer.ValidateWorkflow(
        workflows_pb2.ValidateWorkflowRequest(workflow=bad), NO_CONTEXT
    )
    assert not response.valid
    assert {v.field for v in response.violations} == {"steps[0].needs[0]", "steps[0].tool"}
    assert not response.HasField("plan")
    with pytest.raises(InvalidArgument) as info:
        await servicer.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=bad), NO_CONTEXT)
    assert len(info.value.violations) == 2


async def test_update_stores_a_new_version_and_keeps_the_old_one(servicer: WorkflowServicer) -> None:
    changed = yaml.safe_load(DEMO)
    changed["steps"][0]["prompt"] = "Write two lines about {{ input.topic }}."
    with context.bound(context.CallContext(tenant="acme")):
        created = await servicer.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=workflows_pb2.Workflow(source=DEMO)), NO_CONTEXT
        )
        request = workflows_pb2.UpdateWorkflowRequest(
            workflow=workflows_pb2.Workflow(name="workflows/demo", definition=struct_from_dict(changed))
        )
        updated = await servicer.UpdateWorkflow(request, NO_CONTEXT)
        renamed = await servicer.UpdateWorkflow(
            workflows_pb2.UpdateWorkflowRequest(
                workflow=workflows_pb2.Workflow(name="workflows/demo", display_name="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            NO_CONTEXT,
        )
        first = await servicer.CompileWorkflow(
            workflows_pb2.CompileWorkflowRequest(name="workflows/demo", version=1), NO_CONTEXT
        )
        latest = await servicer.GetWorkflow(
            workflows_pb2.GetWorkflowRequest(name="workflows/demo"), NO_CONTEXT
        )
    assert (updated.version, renamed.version) == (2, 3)
    assert updated.plan_hash != created.plan_hash
    assert renamed.plan_hash == updated.plan_hash  # same definition, same hash
    assert renamed.display_name == "Renamed" and updated.display_name == created.display_name
    assert first.plan_hash == created.plan_hash
    assert latest.version == 3 and latest.create_time == created.create_time


async def test_update_rejects_bad_input_without_storing_anything(servicer: WorkflowServicer) -> None:
    with context.bound(context.CallContext(tenant="acme")):
        await servicer.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(workflow=workflows_pb2.Workflow(source=DEMO)), NO_CONTEXT
        )
        bad = "id: demo\nsteps:\n  - {id: a, kind: tool}\n  - {id: b, kind: nope}\n"
        with pytest.raises(InvalidArgument) as info:
            await servicer.UpdateWorkflow(
                workflows_pb2.UpdateWorkflowRequest(
                    workflow=workflows_pb2.Workflow(name="workflows/demo", source=bad)
                ),
                NO_CONTEXT,
            )
        assert {field for field, _ in info.value.violations} == {"steps[0].tool", "steps[1].kind"}
        with pytest.raises(InvalidArgument) as masked:
            await servicer.UpdateWorkflow(
                workflows_pb2.UpdateWorkflowRequest(
                    workflow=workflows_pb2.Workflow(name="workflows/demo"),
                    update_mask=field_mask_pb2.FieldMask(paths=["version"]),
                ),
                NO_CONTEXT,
            )
        assert masked.value.violations == [("update_mask", "unknown or read-only field 'version'")]
        with pytest.raises(NotFound):
            await servicer.UpdateWorkflow(
                workflows_pb2.UpdateWorkflowRequest(
                    workflow=workflows_pb2.Workflow(name="workflows/missing", source=DEMO)
                ),
                NO_CONTEXT,
            )
        latest = await servicer.GetWorkflow(
            workflows_pb2.GetWorkflowRequest(name="workflows/demo"), NO_CONTEXT
        )
    assert latest.version == 1
