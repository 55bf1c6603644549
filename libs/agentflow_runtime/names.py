"""Resource id rules, shared so that every service agrees on what a valid name is (use `fullmatch`)."""

from __future__ import annotations

import re

WORKFLOW_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
"""`workflows/{id}`: a lowercase letter, then letters, digits or dashes; 63 characters at most."""

TOOL_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
"""`tools/{id}`: same shape as a workflow id."""

MEMORY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
"""`memories/{id}`: lowercase letters, digits, dots, underscores, dashes; 128 characters at most."""

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""`runs/{id}` and `approvals/{id}`: server-assigned."""

AGENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,47}")
"""An agent of `catalog/agents/`: same shape as a tool id, 48 characters at most (it becomes part of the
handoff tool names `transfer_to_{name}` and `ask_{name}`)."""
