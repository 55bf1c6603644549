"""gRPC transport of the planner: translates WorkflowService requests to the registry and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from agentflow.workflows.v1 import workflows_pb2, workflows_pb2_grpc
from agentflow_runtime import context, pagination
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.model_catalog import ModelConfig
from typing_extensions import override

from .convert import plan_to_proto, source_of, violation_to_proto, workflow_to_proto
from .estimate import estimate
from .registry import WorkflowRegistry, parse_workflow_name

Ctx = grpc.aio.ServicerContext[Any, Any]


class WorkflowServicer(workflows_pb2_grpc.WorkflowServiceServicer):
    """WorkflowService over a `WorkflowRegistry`; every read and write is scoped to the caller's tenant."""

    def __init__(
        self, registry: WorkflowRegistry, audit: AuditSink, models: Mapping[str, ModelConfig] | None = None
    ) -> None:
        self._registry = registry
        self._audit = audit
        self._models = models or {}

    @override
    async def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context_: Ctx
    ) -> workflows_pb2.Workflow:
        record = await self._registry.create(
            context.current().tenant,
            source_of(request.workflow),
            workflow_id=request.workflow_id,
            display_name=request.workflow.display_name,
            description=request.workflow.description,
        )
        resource = f"workflows/{record.workflow_id}"
        self._audit.record("workflow.create", resource, details={"plan_hash": record.plan_hash})
        return workflow_to_proto(record)

    @override
    async def UpdateWorkflow(
        self, request: workflows_pb2.UpdateWorkflowRequest, context_: Ctx
    ) -> workflows_pb2.Workflow:
        workflow_id = parse_workflow_name(request.workflow.name)
        record = await self._registry.update(
            context.current().tenant,
            workflow_id,
            source_of(request.workflow),
            display_name=request.workflow.display_name,
            description=request.workflow.description,
            mask=frozenset(request.update_mask.paths),
        )
        details = {"plan_hash": record.plan_hash, "version": str(record.version)}
        self._audit.record("workflow.update", f"workflows/{workflow_id}", details=details)
        return workflow_to_proto(record)

    @override
    async def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context_: Ctx
    ) -> workflows_pb2.Workflow:
        workflow_id = parse_workflow_name(request.name)
        return workflow_to_proto(await self._registry.get(context.current().tenant, workflow_id))

    @override
    async def ListWorkflows(
        self, request: workflows_pb2.ListWorkflowsRequest, context_: Ctx
    ) -> workflows_pb2.ListWorkflowsResponse:
        size = pagination.clamp_page_size(request.page_size)
        offset = pagination.decode_token(request.page_token)
        page, more = await self._registry.list_page(context.current().tenant, offset, size)
        return workflows_pb2.ListWorkflowsResponse(
            workflows=[workflow_to_proto(record) for record in page],
            next_page_token=pagination.encode_token(offset + size) if more else "",
        )

    @override
    async def ValidateWorkflow(
        self, request: workflows_pb2.ValidateWorkflowRequest, context_: Ctx
    ) -> workflows_pb2.ValidateWorkflowResponse:
        checked = await self._registry.validate(context.current().tenant, source_of(request.workflow))
        response = workflows_pb2.ValidateWorkflowResponse(
            valid=checked.plan is not None,
            violations=[violation_to_proto(v) for v in checked.violations],
        )
        if checked.plan is not None:
            response.plan.CopyFrom(plan_to_proto(checked.plan, estimate(checked.plan, self._models)))
        return response

    @override
    async def CompileWorkflow(
        self, request: workflows_pb2.CompileWorkflowRequest, context_: Ctx
    ) -> workflows_pb2.Plan:
        workflow_id = parse_workflow_name(request.name)
        plan = await self._registry.compile(context.current().tenant, workflow_id, request.version)
        return plan_to_proto(plan, estimate(plan, self._models))
