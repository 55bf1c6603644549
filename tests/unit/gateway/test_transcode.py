from __future__ import annotations

import orjson
import pytest
from agentflow.memory.v1 import memory_pb2
from agentflow.runs.v1 import runs_pb2
from agentflow.workflows.v1 import workflows_pb2
from agentflow_gateway.routes import Route, RouteMatch, RouteTable
from agentflow_gateway.templates import parse
from agentflow_gateway.transcode import build_request, response_json
from agentflow_runtime.errors import InvalidArgument
from google.rpc import error_details_pb2


def _match(table: RouteTable, method: str, path: str) -> RouteMatch:
    found = table.match(method, path)
    assert found is not None
    return found


def _violations(exc: InvalidArgument) -> list[str]:
    status = exc.to_status()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


def test_body_star_with_path_variable(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/runs/r1:cancel")
    request = build_request(found.route, found.bindings, "", b'{"reason": "stop", "name": "runs/other"}')
    assert isinstance(request, runs_pb2.CancelRunRequest)
    assert request.name == "runs/r1"  # the path wins over the body
    assert request.reason == "stop"


def test_body_star_accepts_both_name_styles(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/runs")
    body = b'{"workflow": "workflows/w", "workflowVersion": 2, "request_id": "q", "input": {"a": [1]}}'
    request = build_request(found.route, found.bindings, "", body)
    assert isinstance(request, runs_pb2.StartRunRequest)
    assert request.workflow_version == 2
    assert request.request_id == "q"
    assert request.input.fields["a"].list_value.values[0].number_value == 1


def test_empty_body_is_an_empty_message(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/runs")
    assert build_request(found.route, found.bindings, "", b"") == runs_pb2.StartRunRequest()


def test_body_field_plus_nested_path(route_table: RouteTable) -> None:
    found = _match(route_table, "PUT", "/v1/memories/m1")
    request = build_request(found.route, found.bindings, "", b'{"text": "hello", "subject": "bob"}')
    assert isinstance(request, memory_pb2.PutMemoryRequest)
    assert request.memory.name == "memories/m1"
    assert request.memory.text == "hello"


def test_body_field_with_query(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/workflows")
    request = build_request(found.route, found.bindings, "workflowId=w1", b'{"displayName": "W"}')
    assert isinstance(request, workflows_pb2.CreateWorkflowRequest)
    assert request.workflow.display_name == "W"
    assert request.workflow_id == "w1"


def test_query_params_json_and_proto_names(route_table: RouteTable) -> None:
    found = _match(route_table, "GET", "/v1/runs")
    request = build_request(
        found.route, found.bindings, "pageSize=5&page_token=abc&workflow=workflows%2Fw", b""
    )
    assert request == runs_pb2.ListRunsRequest(page_size=5, page_token="abc", workflow="workflows/w")


def test_query_on_a_path_bound_method(route_table: RouteTable) -> None:
    found = _match(route_table, "GET", "/v1/runs/r1:watch")
    request = build_request(found.route, found.bindings, "afterSeq=7", b"")
    assert request == runs_pb2.WatchRunRequest(name="runs/r1", after_seq=7)


def test_unknown_query_param_is_invalid(route_table: RouteTable) -> None:
    found = _match(route_table, "GET", "/v1/runs")
    with pytest.raises(InvalidArgument) as caught:
        build_request(found.route, found.bindings, "bogus=1", b"")
    assert _violations(caught.value) == ["bogus"]


def test_bad_query_type_is_invalid(route_table: RouteTable) -> None:
    found = _match(route_table, "GET", "/v1/runs")
    with pytest.raises(InvalidArgument) as caught:
        build_request(found.route, found.bindings, "pageSize=many", b"")
    assert _violations(caught.value) == ["pageSize"]


def test_unknown_body_field_is_invalid_with_bad_request(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/runs")
    with pytest.raises(InvalidArgument) as caught:
        build_request(found.route, found.bindings, "", b'{"workflow": "workflows/w", "nope": 1}')
    assert "nope" in caught.value.message
    assert _violations(caught.value) == ["nope"]


def test_wrong_type_in_body_names_the_field(route_table: RouteTable) -> None:
    found = _match(route_table, "POST", "/v1/runs")
    with pytest.raises(InvalidArgument) as caught:
        build_request(found.route, found.bindings, "", b'{"workflowVersion": "x"}')
    assert _violations(caught.value) == ["workflowVersion"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_or_non_object_body(route_table: RouteTable, body: bytes) -> None:
    found = _match(route_table, "POST", "/v1/runs")
    with pytest.raises(InvalidArgument) as caught:
        build_request(found.route, found.bindings, "", body)
    assert _violations(caught.value) == ["body"]


def test_body_not_allowed_without_body_rule(route_table: RouteTable) -> None:
    found = _match(route_table, "GET", "/v1/runs/r1")
    with pytest.raises(InvalidArgument):
        build_request(found.route, found.bindings, "", b'{"name": "x"}')


def test_repeated_and_nested_query_params(route_table: RouteTable) -> None:
    # QueryMemories is POST with body "*"; bind its message to a synthetic GET route to test the query.
    query = _match(route_table, "POST", "/v1/memories:query").route
    template = parse("/v1/memories:search")
    route = Route("GET", template, template.compile(), query.method, "", "")
    fields = memory_pb2.QueryMemoriesRequest.DESCRIPTOR.fields_by_name
    assert "text" in fields
    request = build_request(route, (), "text=hi&topK=3", b"")
    assert request == memory_pb2.QueryMemoriesRequest(text="hi", top_k=3)
    with pytest.raises(InvalidArgument):
        build_request(route, (), "text.inner=x", b"")


def test_response_json_is_camel_case_without_defaults(route_table: RouteTable) -> None:
    route = _match(route_table, "GET", "/v1/runs/r1").route
    payload = orjson.loads(response_json(route, runs_pb2.Run(name="runs/r1", last_event_seq=4)))
    assert payload["name"] == "runs/r1"
    assert payload["lastEventSeq"] == "4"
    assert "last_event_seq" not in payload
    assert "state" not in payload  # proto3 JSON omits fields at their default
