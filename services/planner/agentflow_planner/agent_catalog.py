"""The agent catalog: `catalog/agents/*.yaml`, one agent per file, checked against the models and tools.

    name: editor                  # required; lowercase letters, digits, '-' (48 at most)
    description: ...              # optional; shown to other agents that hand off to this one
    model: local-script           # a model alias of catalog/models
    instructions: You edit ...    # the system message (literal text, no templates)
    tools: [word-count]           # tool ids of catalog/tools the agent may call (deny by default)
    handoffs:                     # agents this one may hand the conversation to, each a tool for the model
      - agent: publisher
        mode: transfer            # transfer (`transfer_to_<agent>`, the target continues) | delegate
                                  # (`ask_<agent>`: the target runs and its answer is the tool result)
        input_filter: full        # what of the conversation the target sees: full | last_message | none
        description: ...          # optional
    max_turns: 8                  # model calls the agent may make per step (default 10, at most 100)
    budget: {max_tokens: 20000, max_cost_usd: 0.5}   # optional caps per step; 0 means no cap

Problems are kept per agent as violations (field paths `agents/<name>.<field>`), so a workflow that uses a
broken agent is refused with every problem listed, while workflows that do not use it still work.
Delegation must not cycle (a delegating agent waits for its target's answer); transfers may (triage ->
billing -> triage), bounded by `max_turns`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from agentflow_runtime.model_catalog import ModelConfig
from agentflow_runtime.names import AGENT_NAME, TOOL_ID

from . import graph
from .violations import Violation, Violations

__all__ = ["FILTERS", "MODES", "AgentCatalog", "load_tool_specs"]

MODES = ("transfer", "delegate")
FILTERS = ("full", "last_message", "none")
DEFAULT_MAX_TURNS = 10
MAX_TURNS = 100
_FIELDS = frozenset(
    {"name", "description", "model", "instructions", "tools", "handoffs", "max_turns", "budget"}
)
_HANDOFF_FIELDS = frozenset({"agent", "mode", "input_filter", "description"})


@dataclass
class AgentCatalog:
    """Agents by name, normalised (`agents`), and the problems of each (`problems`)."""

    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, list[Violation]] = field(default_factory=dict)

    @classmethod
    def load(cls, catalog_dir: Path, models: Mapping[str, ModelConfig]) -> AgentCatalog:
        """The agents of `catalog_dir/agents`, checked against the models and `catalog_dir/tools`."""
        directory = catalog_dir / "agents"
        documents: list[tuple[str, Any]] = []
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            try:
                documents.append((path.stem, yaml.safe_load(path.read_text(encoding="utf-8"))))
            except yaml.YAMLError as exc:
                documents.append((path.stem, f"not valid YAML: {exc}"))
        return cls.build(documents, models, load_tool_specs(catalog_dir / "tools"))

    @classmethod
    def build(
        cls,
        documents: list[tuple[str, Any]],
        models: Mapping[str, ModelConfig],
        tools: Mapping[str, dict[str, Any]],
    ) -> AgentCatalog:
        """The catalog of parsed documents (`(file stem, document)`), checked against models and tools."""
        catalog = cls()
        names = {str(doc.get("name")) for _, doc in documents if isinstance(doc, dict) and doc.get("name")}
        for stem, doc in documents:
            name = str(doc.get("name") or stem) if isinstance(doc, dict) else stem
            out = Violations()
            if name in catalog.agents:
                out.add(f"agents/{name}.name", "is defined twice")
            agent = _check(doc, f"agents/{name}", models, tools, names, out)
            catalog.agents[name] = agent
            catalog.problems[name] = out.items
        catalog._check_delegation_cycles()
        return catalog

    def _check_delegation_cycles(self) -> None:
        edges = {
            name: [h["agent"] for h in agent.get("handoffs", []) if h.get("mode") == "delegate"]
            for name, agent in self.agents.items()
        }
        for cycle in graph.find_cycles(sorted(edges), edges):
            for name in set(cycle):
                self.problems[name].append(
                    Violation(f"agents/{name}.handoffs", f"delegation cycle: {' -> '.join(cycle)}")
                )

    def closure(self, name: str) -> list[str]:
        """`name` and every agent reachable from it by handoffs, in a stable order."""
        seen: list[str] = []
        todo = [name]
        while todo:
            current = todo.pop(0)
            if current in seen or current not in self.agents:
                continue
            seen.append(current)
            todo.extend(h["agent"] for h in self.agents[current].get("handoffs", []))
        return seen


def load_tool_specs(directory: Path) -> dict[str, dict[str, Any]]:
    """What the model is told about each catalog tool: `{id: {description, parameters}}`.

    Only the fields the model needs are read; the tool-sandbox owns (and fully checks) the catalog.
    """
    specs: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            schema = doc.get("input_schema")
            specs[doc["id"]] = {
                "description": str(doc.get("description") or ""),
                "parameters": schema if isinstance(schema, dict) else {"type": "object"},
            }
    return specs


def _check(
    doc: Any,
    where: str,
    models: Mapping[str, ModelConfig],
    tools: Mapping[str, dict[str, Any]],
    names: set[str],
    out: Violations,
) -> dict[str, Any]:
    if not isinstance(doc, dict):
        out.add(where, doc if isinstance(doc, str) else "an agent file holds one object")
        return {}
    for key in sorted(set(doc) - _FIELDS):
        out.add(f"{where}.{key}", f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
    name = doc.get("name")
    if not isinstance(name, str) or not AGENT_NAME.fullmatch(name):
        out.add(f"{where}.name", "must be 1-48 lowercase letters, digits or '-', starting with a letter")
    model = doc.get("model")
    if not isinstance(model, str) or model.removeprefix("models/") not in models:
        out.add(f"{where}.model", f"unknown model {model!r} (known: {', '.join(sorted(models))})")
    instructions = doc.get("instructions", "")
    if not isinstance(instructions, str) or not instructions.strip():
        out.add(f"{where}.instructions", "must be a non-empty string")
    elif "{{" in instructions:
        out.add(f"{where}.instructions", "must be literal text (templates belong in the step's `input`)")
    agent: dict[str, Any] = {
        "name": name,
        "description": str(doc.get("description") or ""),
        "model": str(model or "").removeprefix("models/"),
        "instructions": instructions,
        "tools": _tools(doc.get("tools", []), f"{where}.tools", tools, out),
        "handoffs": _handoffs(doc.get("handoffs", []), f"{where}.handoffs", names, out),
        "max_turns": _max_turns(doc.get("max_turns", DEFAULT_MAX_TURNS), f"{where}.max_turns", out),
        "budget": _budget(doc.get("budget") or {}, f"{where}.budget", out),
    }
    return agent


def _tools(
    raw: Any, where: str, tools: Mapping[str, dict[str, Any]], out: Violations
) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        out.add(where, "must be a list of tool ids")
        return []
    result: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, str) or not TOOL_ID.fullmatch(tool):
            out.add(f"{where}[{i}]", "must be a tool id")
        elif tool not in tools:
            out.add(f"{where}[{i}]", f"unknown tool {tool!r} (catalog tools: {', '.join(sorted(tools))})")
        elif any(t["name"] == tool for t in result):
            out.add(f"{where}[{i}]", f"{tool!r} is listed twice")
        else:
            result.append({"name": tool, **tools[tool]})
    return result


def _handoffs(raw: Any, where: str, names: set[str], out: Violations) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        out.add(where, "must be a list of {agent, mode, input_filter}")
        return []
    result: list[dict[str, Any]] = []
    for i, handoff in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(handoff, dict):
            out.add(path, "must be an object {agent, mode, input_filter}")
            continue
        for key in sorted(set(handoff) - _HANDOFF_FIELDS):
            out.add(f"{path}.{key}", f"unknown field (allowed: {', '.join(sorted(_HANDOFF_FIELDS))})")
        target = handoff.get("agent")
        if not isinstance(target, str) or target not in names:
            out.add(f"{path}.agent", f"unknown agent {target!r} (known: {', '.join(sorted(names))})")
        elif any(h["agent"] == target for h in result):
            out.add(f"{path}.agent", f"{target!r} is listed twice")
        mode = handoff.get("mode", "transfer")
        if mode not in MODES:
            out.add(f"{path}.mode", f"must be one of {', '.join(MODES)}")
        input_filter = handoff.get("input_filter", "full")
        if input_filter not in FILTERS:
            out.add(f"{path}.input_filter", f"must be one of {', '.join(FILTERS)}")
        result.append(
            {
                "agent": target,
                "mode": mode,
                "input_filter": input_filter,
                "description": str(handoff.get("description") or ""),
            }
        )
    return result


def _max_turns(raw: Any, where: str, out: Violations) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_TURNS:
        out.add(where, f"must be an integer from 1 to {MAX_TURNS}")
        return DEFAULT_MAX_TURNS
    return raw


def _budget(raw: Any, where: str, out: Violations) -> dict[str, Any]:
    budget: dict[str, Any] = {"max_tokens": 0, "max_cost_usd": 0.0}
    if not isinstance(raw, dict) or set(raw) - set(budget):
        out.add(where, "must be an object {max_tokens, max_cost_usd}")
        return budget
    tokens, cost = raw.get("max_tokens", 0), raw.get("max_cost_usd", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        out.add(f"{where}.max_tokens", "must be a non-negative integer")
    else:
        budget["max_tokens"] = tokens
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
        out.add(f"{where}.max_cost_usd", "must be a non-negative number")
    else:
        budget["max_cost_usd"] = float(cost)
    return budget
