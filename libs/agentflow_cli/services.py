"""Where each service's `build(settings)` lives."""

from __future__ import annotations

import importlib

from agentflow_runtime.server import Service
from agentflow_runtime.settings import SERVICES, Settings

START_ORDER: tuple[str, ...] = (
    "audit",
    "model-gateway",
    "memory",
    "tool-sandbox",
    "planner",
    "worker",
    "gateway",
)
"""Dependencies first: everything audits; the worker calls the rest; the gateway fronts all."""

assert sorted(START_ORDER) == sorted(SERVICES)


def build(name: str, settings: Settings) -> Service:
    """Build the named service from its package `agentflow_<name>.app`."""
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    module = importlib.import_module(f"agentflow_{name.replace('-', '_')}.app")
    service: Service = module.build(settings)
    return service
