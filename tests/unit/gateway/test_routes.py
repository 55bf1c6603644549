from __future__ import annotations

import pytest
from agentflow_gateway.routes import Route, RouteTable, build_methods
from agentflow_gateway.templates import parse
from agentflow_runtime import descriptors
from google.api import annotations_pb2

PUBLIC = {
    "agentflow.runs.v1.RunService",
    "agentflow.approvals.v1.ApprovalService",
    "agentflow.workflows.v1.WorkflowService",
    "agentflow.tools.v1.ToolService",
    "agentflow.tools.v1.McpServerService",
    "agentflow.models.v1.ModelService",
    "agentflow.memory.v1.MemoryService",
    "agentflow.audit.v1.AuditService",
}


def _example_path(route: Route) -> str:
    parts: list[str] = []
    for segment in route.template.flat_segments():
        parts.append({"*": "x1", "**": "x1/x2"}.get(segment, segment))
    verb = f":{route.template.verb}" if route.template.verb else ""
    return "/" + "/".join(parts) + verb


def test_methods_cover_the_public_services_only() -> None:
    methods = build_methods()
    assert {m.service for m in methods.values()} == PUBLIC
    assert not any("AuditIngestService" in path for path in methods)
    assert not any("McpBridgeService" in path for path in methods)


def test_every_public_rpc_with_an_http_rule_is_routable(route_table: RouteTable) -> None:
    pool = descriptors.load_contracts()
    expected = set()
    for name in PUBLIC:
        for method in pool.FindServiceByName(name).methods:
            if method.GetOptions().HasExtension(annotations_pb2.http):
                expected.add(f"/{name}/{method.name}")
    routed = {r.method.grpc_path for r in route_table.routes}
    assert routed == expected
    for route in route_table.routes:
        found = route_table.match(route.http_method, _example_path(route))
        assert found is not None and found.route is route, route.template.source


def test_verb_routes_match_before_plain_ones(route_table: RouteTable) -> None:
    watch = route_table.match("GET", "/v1/runs/r1:watch")
    assert watch is not None and watch.route.method.name == "WatchRun"
    assert watch.bindings == ((("name",), "runs/r1"),)
    get = route_table.match("GET", "/v1/runs/r1")
    assert get is not None and get.route.method.name == "GetRun"
    cancel = route_table.match("POST", "/v1/runs/r1:cancel")
    assert cancel is not None and cancel.route.method.name == "CancelRun"
    validate = route_table.match("POST", "/v1/workflows:validate")
    assert validate is not None and validate.route.method.name == "ValidateWorkflow"
    create = route_table.match("POST", "/v1/workflows")
    assert create is not None and create.route.method.name == "CreateWorkflow"


def test_nested_path_field_for_put_memory(route_table: RouteTable) -> None:
    found = route_table.match("PUT", "/v1/memories/m%201")
    assert found is not None
    assert found.route.method.name == "PutMemory"
    assert found.route.body == "memory"
    assert found.bindings == ((("memory", "name"), "memories/m 1"),)


def test_unknown_and_wrong_method(route_table: RouteTable) -> None:
    assert route_table.match("GET", "/v1/nothing") is None
    assert route_table.allowed_methods("/v1/nothing") == []
    assert route_table.match("DELETE", "/v1/runs") is None
    assert route_table.allowed_methods("/v1/runs") == ["GET", "POST"]


def test_streaming_and_read_flags() -> None:
    methods = build_methods()
    watch = methods["/agentflow.runs.v1.RunService/WatchRun"]
    assert watch.server_streaming and watch.read_only and watch.mesh_service == "worker"
    start = methods["/agentflow.runs.v1.RunService/StartRun"]
    assert not start.server_streaming and not start.read_only
    assert methods["/agentflow.tools.v1.ToolService/ExecuteTool"].mesh_service == "tool-sandbox"
    assert methods["/agentflow.workflows.v1.WorkflowService/GetWorkflow"].mesh_service == "planner"


def test_more_literal_segments_win() -> None:
    methods = build_methods()
    get = methods["/agentflow.runs.v1.RunService/GetRun"]
    list_ = methods["/agentflow.runs.v1.RunService/ListRuns"]
    generic = parse("/v1/{name=*/*}")
    specific = parse("/v1/{name=runs/*}")
    table = RouteTable(
        [
            Route("GET", generic, generic.compile(), list_, "", ""),
            Route("GET", specific, specific.compile(), get, "", ""),
        ]
    )
    found = table.match("GET", "/v1/runs/r1")
    assert found is not None and found.route.method is get
    other = table.match("GET", "/v1/tools/t1")
    assert other is not None and other.route.method is list_


@pytest.mark.parametrize("path", ["/v1/runs/r1/extra", "/v1/runs/", "/v1"])
def test_no_partial_matches(route_table: RouteTable, path: str) -> None:
    assert route_table.match("GET", path) is None
