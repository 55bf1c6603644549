"""The planner's use cases over definitions, plans and the store; no transport types."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.errors import AlreadyExists, InvalidArgument
from agentflow_runtime.names import WORKFLOW_ID

from . import store
from .agent_catalog import AgentCatalog
from .agent_pins import pin_agents
from .compiler import Plan, compile_plan
from .definition import WorkflowDefinition, check_definition
from .subworkflows import inline_workflows
from .version_cache import VersionCache
from .violations import Violation

__all__ = ["UPDATABLE_FIELDS", "Validation", "WorkflowRegistry", "parse_workflow_name"]

UPDATABLE_FIELDS = frozenset({"source", "definition", "display_name", "description"})

log = logging.getLogger("agentflow.planner")


@dataclass(frozen=True)
class Validation:
    """The outcome of validating a definition: its plan when valid, else every violation."""

    definition: WorkflowDefinition | None
    violations: tuple[Violation, ...]
    plan: Plan | None


def parse_workflow_name(name: str) -> str:
    """The workflow id in `workflows/{id}`; InvalidArgument otherwise."""
    prefix, _, workflow_id = name.partition("/")
    if prefix != "workflows" or not WORKFLOW_ID.fullmatch(workflow_id):
        raise InvalidArgument(
            f"{name!r} is not a workflow name", violations=[("name", "must be workflows/{workflow}")]
        )
    return workflow_id


def validate(source: str | Mapping[str, Any] | None, agents: AgentCatalog | None = None) -> Validation:
    """Validates a definition (text or data) and compiles it when valid; never raises for bad input.

    Agent steps are checked against `agents` and pin the definitions they use (`agent_pins`).
    """
    if not source:
        return Validation(
            None, (Violation("source", "give the definition as `source` text or `definition`"),), None
        )
    definition, violations = check_definition(source)
    if definition is not None:
        definition, violations = pin_agents(definition, agents)
    if definition is None:
        return Validation(None, tuple(violations), None)
    return Validation(definition, (), compile_plan(definition))


def _read_catalog(directory: Path) -> list[tuple[Path, str]]:
    if not directory.is_dir():
        return []
    return [(path, path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.yaml"))]


class WorkflowRegistry:
    """Creates, reads and compiles the workflows of each tenant."""

    def __init__(
        self, db: Database, cache: VersionCache | None = None, agents: AgentCatalog | None = None
    ) -> None:
        self._db = db
        self._cache = cache or VersionCache()
        self.agents = agents or AgentCatalog()

    async def validate(
        self, tenant: str, source: str | Mapping[str, Any] | None, workflow_id: str = ""
    ) -> Validation:
        """`validate`, then the sub-workflows inlined (`subworkflows`); never raises for bad input."""
        checked = validate(source, self.agents)
        if checked.definition is None:
            return checked
        workflow_id = workflow_id or checked.definition.id

        async def load(ref_id: str, version: int) -> tuple[Plan, dict[str, Any] | None]:
            record, plan = await self._version(tenant, ref_id, version)
            return plan, record.definition.get("input")

        inlined, violations = await inline_workflows(checked.definition, workflow_id, load)
        if inlined is None:
            return Validation(None, tuple(violations), None)
        return Validation(inlined, (), compile_plan(inlined, workflow_id=workflow_id))

    async def _checked(
        self, tenant: str, source: str | Mapping[str, Any] | None, workflow_id: str = ""
    ) -> WorkflowDefinition:
        checked = await self.validate(tenant, source, workflow_id)
        if checked.definition is None:
            violations = [(v.field, v.description) for v in checked.violations]
            first = checked.violations[0]
            raise InvalidArgument(
                f"invalid workflow definition: {first.field}: {first.description}",
                reason="INVALID_WORKFLOW",
                violations=violations,
            )
        return checked.definition

    async def update(
        self,
        tenant: str,
        workflow_id: str,
        source: str | Mapping[str, Any] | None,
        *,
        display_name: str = "",
        description: str = "",
        mask: frozenset[str] = frozenset(),
    ) -> store.StoredWorkflow:
        """Stores a new version of a workflow (`mask`: the fields to change; empty: every field given).

        A new definition is validated and compiled like on create (InvalidArgument lists every violation);
        without one, the latest definition is kept (and recompiled, so the new version pins today's agent
        definitions). Earlier versions stay as they were.
        """
        unknown = sorted(mask - UPDATABLE_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"cannot update {', '.join(unknown)}",
                violations=[("update_mask", f"unknown or read-only field {name!r}") for name in unknown],
            )
        if ("source" in mask or "definition" in mask) and not source:
            raise InvalidArgument(
                "the update mask names the definition but none was given",
                violations=[("workflow.source", "give the new definition as `source` or `definition`")],
            )
        async with self._db.connect() as conn:
            current = await store.get_workflow(conn, tenant=tenant, workflow_id=workflow_id)
        new_definition = source if source and (not mask or mask & {"source", "definition"}) else None
        definition = await self._checked(tenant, new_definition or current.definition, workflow_id)
        if not mask:
            display_name = display_name or current.display_name
            description = description or current.description
        else:
            display_name = display_name if "display_name" in mask else current.display_name
            description = description if "description" in mask else current.description
        plan = compile_plan(definition, version=current.version + 1, workflow_id=workflow_id)
        async with self._db.begin() as conn:
            record = await store.add_version(
                conn,
                current,
                display_name=display_name,
                description=description,
                definition=definition.document,
                plan=plan.to_dict(),
                plan_hash=plan.plan_hash,
            )
        self._cache.put(record, latest=True)
        return record

    async def create(
        self,
        tenant: str,
        source: str | Mapping[str, Any] | None,
        *,
        workflow_id: str = "",
        display_name: str = "",
        description: str = "",
    ) -> store.StoredWorkflow:
        """Stores version 1 of a new workflow; InvalidArgument lists every violation."""
        if workflow_id and not WORKFLOW_ID.fullmatch(workflow_id):
            raise InvalidArgument(
                f"{workflow_id!r} is not a valid workflow id",
                violations=[("workflow_id", "1-63 lowercase letters, digits or '-', starting with a letter")],
            )
        definition = await self._checked(tenant, source, workflow_id)
        workflow_id = workflow_id or definition.id
        plan = compile_plan(definition, version=1, workflow_id=workflow_id)
        async with self._db.begin() as conn:
            record = await store.create_workflow(
                conn,
                tenant=tenant,
                workflow_id=workflow_id,
                display_name=display_name or definition.display_name,
                description=description or definition.description,
                definition=definition.document,
                plan=plan.to_dict(),
                plan_hash=plan.plan_hash,
            )
        self._cache.put(record, latest=True)
        return record

    async def get(self, tenant: str, workflow_id: str, version: int = 0) -> store.StoredWorkflow:
        return (await self._version(tenant, workflow_id, version))[0]

    async def _version(
        self, tenant: str, workflow_id: str, version: int
    ) -> tuple[store.StoredWorkflow, Plan]:
        """A stored version and its plan, from the cache when this replica has read it before."""
        key = (tenant, workflow_id)
        cached = self._cache.get(key, self._cache.resolve(key, version))
        if cached is not None:
            return cached
        async with self._db.connect() as conn:
            record = await store.get_workflow(conn, tenant=tenant, workflow_id=workflow_id, version=version)
        return self._cache.put(record, latest=version == 0)

    async def list_page(
        self, tenant: str, offset: int, limit: int
    ) -> tuple[list[store.StoredWorkflow], bool]:
        async with self._db.connect() as conn:
            return await store.list_workflows(conn, tenant=tenant, offset=offset, limit=limit)

    async def compile(self, tenant: str, workflow_id: str, version: int = 0) -> Plan:
        """The plan of a stored version (0: the latest), compiled when it was stored."""
        if version < 0:
            raise InvalidArgument("version must not be negative", violations=[("version", "negative")])
        return (await self._version(tenant, workflow_id, version))[1]

    async def seed(self, tenant: str, directory: Path) -> list[str]:
        """Creates each `*.yaml` workflow of `directory` the tenant lacks; returns the ids created.

        Idempotent: existing workflows are left alone, invalid files are logged and skipped.
        """
        created: list[str] = []
        for path, text in await asyncio.to_thread(_read_catalog, directory):
            checked = validate(text, self.agents)
            if checked.definition is None:
                problems = "; ".join(f"{v.field}: {v.description}" for v in checked.violations)
                log.warning("skipping invalid catalog workflow %s: %s", path, problems)
                continue
            try:
                await self.create(tenant, checked.definition.document)
            except AlreadyExists:
                continue
            except InvalidArgument as exc:  # e.g. a sub-workflow the tenant lacks
                problems = "; ".join(f"{field}: {text}" for field, text in exc.violations)
                log.warning("skipping catalog workflow %s: %s", path, problems)
                continue
            created.append(checked.definition.id)
        return created
