"""Approval policies: loading with errors that name file and field, and matching calls."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.clients import Channels
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import load_settings
from agentflow_worker.app import build
from agentflow_worker.policy import GateCall, PolicyError, PolicySet, load_policies, parse_policy

from tests.support import REPO

POLICY = """
id: changes
rules:
  - id: prod-deploys
    description: Deploying to production needs an admin.
    match:
      tools: [deploy, "release-*"]
      arguments:
        - {path: env, regex: "^prod"}
    approvers: [admin]
    ttl_seconds: 600
    on_expiry: reject
  - id: editor-publishes
    match:
      agents: [editor]
      tools: [publish]
  - id: big-model-calls
    match:
      min_cost_usd: 0.5
    approvers: [admin, developer]
  - id: hosts
    match:
      workflows: [ops-*]
      arguments:
        - {path: "$.targets[*].host", glob: "*.internal"}
        - {path: "targets[0].port", equals: 22}
"""


def rules() -> PolicySet:
    return PolicySet(tuple(parse_policy(POLICY, "changes.yaml")))


def tool(name: str, **arguments: object) -> GateCall:
    return GateCall(kind="tool", workflow="wf", step_id="s", tool=name, arguments=arguments)


def test_tool_and_argument_regex() -> None:
    policies = rules()
    rule = policies.match(tool("deploy", env="production"))
    assert rule is not None and rule.name == "changes/prod-deploys"
    assert rule.approvers == ("admin",) and rule.ttl_seconds == 600 and rule.on_expiry == "reject"
    assert policies.match(tool("release-web", env="prod-eu")) is rule
    assert policies.match(tool("deploy", env="staging")) is None
    assert policies.match(tool("deploy")) is None, "a missing argument does not match"
    assert policies.match(tool("word-count", env="prod")) is None


def test_agent_rules_match_only_that_agents_calls() -> None:
    policies = rules()
    call = GateCall(kind="tool", workflow="wf", step_id="s", tool="publish", agent="editor")
    rule = policies.match(call)
    assert rule is not None and rule.id == "editor-publishes"
    assert rule.approvers == ("admin",) and rule.on_expiry == "fail", "defaults"
    assert policies.match(tool("publish")) is None, "a tool step has no agent"
    other = GateCall(kind="tool", workflow="wf", step_id="s", tool="publish", agent="reviewer")
    assert policies.match(other) is None


def test_cost_threshold() -> None:
    policies = rules()
    cheap = GateCall(kind="model", workflow="wf", step_id="s", model="gpt", cost_usd=0.49)
    dear = GateCall(kind="model", workflow="wf", step_id="s", model="gpt", cost_usd=0.5)
    assert policies.match(cheap) is None
    rule = policies.match(dear)
    assert rule is not None and rule.id == "big-model-calls"


def test_wildcard_paths_and_equals_all_must_hold() -> None:
    policies = rules()
    targets = [{"host": "db.internal", "port": 22}, {"host": "web.example.com", "port": 443}]
    ops = GateCall(
        kind="tool", workflow="ops-nightly", step_id="s", tool="ssh", arguments={"targets": targets}
    )
    rule = policies.match(ops)
    assert rule is not None and rule.id == "hosts"
    other_wf = GateCall(
        kind="tool", workflow="daily", step_id="s", tool="ssh", arguments={"targets": targets}
    )
    assert policies.match(other_wf) is None
    port = [{"host": "db.internal", "port": 2222}]
    assert policies.match(GateCall("tool", "ops-x", "s", tool="ssh", arguments={"targets": port})) is None


def test_step_glob_and_non_string_values() -> None:
    text = """
rules:
  - id: r
    match:
      steps: ["ship-*"]
      arguments: [{path: "options", regex: '"force": true'}]
"""
    policies = PolicySet(tuple(parse_policy(text, "p.yaml", default_id="p")))
    hit = GateCall("tool", "wf", "ship-eu", tool="t", arguments={"options": {"force": True}})
    rule = policies.match(hit)
    assert rule is not None and rule.name == "p/r"
    assert policies.match(GateCall("tool", "wf", "ship-eu", tool="t", arguments={"options": {}})) is None
    assert (
        policies.match(GateCall("tool", "wf", "build", tool="t", arguments={"options": {"force": True}}))
        is None
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("rules: []", "rules:"),
        ("rules: [{id: r}]", "rules[0].match:"),
        ("rules: [{id: r, match: {tool: [x]}}]", "rules[0].match.tool: unknown field"),
        ("rules: [{id: R, match: {tools: [x]}}]", "rules[0].id:"),
        ("rules: [{id: r, match: {tools: []}}]", "rules[0].match.tools:"),
        (
            "rules: [{id: r, match: {arguments: [{path: a, regex: '('}]}}]",
            "rules[0].match.arguments[0].regex",
        ),
        ("rules: [{id: r, match: {arguments: [{path: a}]}}]", "rules[0].match.arguments[0]: exactly one"),
        ("rules: [{id: r, match: {arguments: [{path: 'a[', glob: x}]}}]", "rules[0].match.arguments[0].path"),
        ("rules: [{id: r, match: {min_cost_usd: -1}}]", "rules[0].match.min_cost_usd"),
        ("rules: [{id: r, match: {tools: [x]}, approvers: [viewer]}]", "rules[0].approvers: 'viewer'"),
        ("rules: [{id: r, match: {tools: [x]}, ttl_seconds: 0}]", "rules[0].ttl_seconds"),
        ("rules: [{id: r, match: {tools: [x]}, on_expiry: later}]", "rules[0].on_expiry"),
        ("rules: [{id: r, match: {tools: [x]}}, {id: r, match: {tools: [y]}}]", "rules[1].id"),
        ("colour: red\nrules: [{id: r, match: {tools: [x]}}]", "colour: unknown field"),
        ("rules: [{id: r, match: {tools: [x]}", "not valid YAML"),
    ],
)
def test_bad_policies_name_file_and_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "catalog/policies/bad.yaml", default_id="bad")
    message = str(caught.value)
    assert message.startswith("catalog/policies/bad.yaml: "), message
    assert field in message, message


def test_load_directory_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("rules: [{id: second, match: {tools: [t]}}]")
    (tmp_path / "a.yaml").write_text("rules: [{id: first, match: {tools: ['*']}}]")
    policies = load_policies(tmp_path)
    assert [r.name for r in policies.rules] == ["a/first", "b/second"]
    rule = policies.match(tool("t"))
    assert rule is not None and rule.name == "a/first"
    assert not load_policies(tmp_path / "missing")
    (tmp_path / "c.yaml").write_text("id: a\nrules: [{id: third, match: {tools: [t]}}]")
    with pytest.raises(PolicyError, match=r"c.yaml: id: policy 'a' is also defined"):
        load_policies(tmp_path)


def test_the_catalog_policies_load() -> None:
    policies = load_policies(REPO / "catalog" / "policies")
    assert policies.rules, "the catalog ships an example policy"


def test_steps_no_rule_can_gate_are_known_before_rendering() -> None:
    policies = rules()
    assert policies.may_gate_step("tool", "wf", "ship", 0.0), "prod-deploys needs the rendered arguments"
    assert policies.may_gate_step("model", "wf", "s", 0.5), "big-model-calls"
    assert not policies.may_gate_step("model", "wf", "s", 0.1), "tools rules need a tool; cost too low"
    only = PolicySet(
        tuple(parse_policy("rules: [{id: r, match: {workflows: [ops], steps: [go]}}]", "p.yaml", "p"))
    )
    assert only.may_gate_step("tool", "ops", "go", 0.0)
    assert not only.may_gate_step("tool", "ops", "stay", 0.0)
    assert not only.may_gate_step("tool", "dev", "go", 0.0)
    agents = PolicySet(tuple(parse_policy("rules: [{id: r, match: {agents: [a]}}]", "p.yaml", "p")))
    assert not agents.may_gate_step("tool", "ops", "go", 0.0), "agent rules gate agents' tool calls only"


async def test_a_bad_policy_stops_the_worker_at_start(tmp_path: Path) -> None:
    policies_dir = tmp_path / "catalog" / "policies"
    policies_dir.mkdir(parents=True)
    (policies_dir / "ops.yaml").write_text("rules: [{id: r, match: {tools: [x]}, on_expiry: maybe}]")
    settings = load_settings(database_url=None, data_dir=tmp_path / "data", catalog_dir=tmp_path / "catalog")
    service = build(settings)
    with pytest.raises(
        PolicyError, match=r"policies/ops.yaml: rules\[0\].on_expiry: one of fail, reject, approve"
    ):
        await service.start(
            grpc.aio.server(), Runtime(settings, Channels(settings, "worker"), AuditSink(None))
        )
    await service.stop()
