"""Builds the worker: store, scheduler, planner client, servicers."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from agentflow.approvals.v1 import approvals_pb2_grpc
from agentflow.runs.v1 import runs_pb2_grpc
from agentflow.workflows.v1 import workflows_pb2, workflows_pb2_grpc
from agentflow_runtime.clients import call_timeout
from agentflow_runtime.db import Database
from agentflow_runtime.errors import from_rpc_error
from agentflow_runtime.protojson import dict_from_struct, py_from_value
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from agentflow_worker.approvals import Approvals
from agentflow_worker.expiry import ExpirySweeper
from agentflow_worker.gate import ApprovalGate
from agentflow_worker.hub import EventHub
from agentflow_worker.mesh_calls import MeshStepCalls
from agentflow_worker.model import Plan, PlanStep
from agentflow_worker.policy import load_policies
from agentflow_worker.runs import Runs
from agentflow_worker.scheduler import Scheduler
from agentflow_worker.servicer import ApprovalServicer, RunServicer
from agentflow_worker.store import RunStore
from agentflow_worker.tables import metadata
from agentflow_worker.waiting import Settled

_KINDS = {
    workflows_pb2.STEP_KIND_MODEL: "model",
    workflows_pb2.STEP_KIND_TOOL: "tool",
    workflows_pb2.STEP_KIND_MEMORY: "memory",
    workflows_pb2.STEP_KIND_AGENT: "agent",
    workflows_pb2.STEP_KIND_VALUE: "value",
}


def plan_from_pb(plan: workflows_pb2.Plan) -> Plan:
    return Plan(
        workflow=plan.workflow,
        workflow_version=plan.workflow_version,
        plan_hash=plan.plan_hash,
        steps=tuple(
            PlanStep(s.id, _KINDS.get(s.kind, "unspecified"), tuple(s.needs), dict_from_struct(s.params))
            for s in plan.steps
        ),
        output=py_from_value(plan.output) if plan.HasField("output") else None,
        cost_estimate=(
            {
                "input_tokens": plan.cost_estimate.input_tokens,
                "output_tokens": plan.cost_estimate.output_tokens,
                "cost_usd": plan.cost_estimate.cost_usd,
                "unpriced_models": list(plan.cost_estimate.unpriced_models),
                "steps": {s.step_id: s.cost_usd for s in plan.cost_estimate.steps},
            }
            if plan.HasField("cost_estimate")
            else None
        ),
    )


class WorkerService:
    name = "worker"
    service_names: Sequence[str] = (
        "agentflow.runs.v1.RunService",
        "agentflow.approvals.v1.ApprovalService",
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.for_service(settings, self.name)
        self.scheduler: Scheduler | None = None
        self.store: RunStore | None = None
        self.sweeper: ExpirySweeper | None = None

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        # A bad policy stops the worker here, with an error naming the file and field.
        policies = load_policies(self.settings.catalog_dir / "policies")
        await self.db.create_all(metadata)
        store = self.store = RunStore(self.db)
        hub = EventHub()
        planner = workflows_pb2_grpc.WorkflowServiceStub(runtime.channels.get("planner"))

        async def compile_plan(workflow: str, version: int) -> Plan:
            request = workflows_pb2.CompileWorkflowRequest(name=workflow, version=version)
            try:
                return plan_from_pb(await planner.CompileWorkflow(request, timeout=call_timeout(10.0)))
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from exc

        self.scheduler = Scheduler(
            store,
            MeshStepCalls(runtime.channels),
            hub.notify,
            lease_seconds=self.settings.worker_lease_seconds,
            poll_seconds=self.settings.worker_poll_seconds,
            on_finish=lambda run_id, _state: hub.forget(run_id),
            gate=ApprovalGate(policies, self.db, runtime.audit),
        )
        scheduler = self.scheduler

        async def settled(decision: Settled) -> None:
            await hub.notify(decision.run_id)
            if decision.resumed:
                await scheduler.submit(decision.run_id)  # else the next claim poll takes it

        runs = Runs(store, self.scheduler, hub, compile_plan)
        runs_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(runs, runtime.audit), server)
        approvals_pb2_grpc.add_ApprovalServiceServicer_to_server(
            ApprovalServicer(Approvals(self.db, settled), runtime.audit), server
        )
        self.scheduler.start()
        self.sweeper = ExpirySweeper(
            self.db, settled, runtime.audit, interval=min(self.settings.worker_poll_seconds, 1.0)
        )
        self.sweeper.start()

    async def stop(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.store is not None:
            await self.store.close()
        await self.db.dispose()


def build(settings: Settings) -> WorkerService:
    return WorkerService(settings)
