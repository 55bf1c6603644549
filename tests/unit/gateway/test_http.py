"""The ASGI edge against a real grpc.aio server running a fake RunService."""

from __future__ import annotations

import grpc
import httpx
import orjson
from agentflow_gateway.auth import Authenticator, HS256Verifier
from agentflow_gateway.backends import Backends
from agentflow_gateway.http import GatewayApp
from agentflow_gateway.routes import RouteTable
from google.rpc import code_pb2

from tests.unit.gateway.conftest import SECRET, FakeRunService, OneChannel, bearer


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200


async def test_start_run_path_body_and_identity(
    client: httpx.AsyncClient, fake_runs: tuple[FakeRunService, str], channels: OneChannel
) -> None:
    servicer, _ = fake_runs
    body = {"workflow": "workflows/w", "input": {"topic": "x"}, "labels": {"k": "v"}}
    response = await client.post("/v1/runs", json=body, headers=bearer("developer"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["name"] == "runs/r1"
    assert payload["workflow"] == "workflows/w"
    assert payload["input"] == {"topic": "x"}
    assert payload["state"] == "RUN_STATE_PENDING"
    metadata = servicer.metadata[-1]
    assert metadata["x-af-tenant"] == "acme"
    assert metadata["x-af-principal"] == "alice"
    assert metadata["x-af-role"] == "developer"
    deadline = servicer.deadlines[-1]
    # The default 30 s deadline arrives; grpc-timeout encoding may round it up by a fraction of a second.
    assert deadline is not None and 25 < deadline <= 31
    assert channels.asked == ["worker"]


async def test_query_params_and_request_timeout(
    client: httpx.AsyncClient, fake_runs: tuple[FakeRunService, str]
) -> None:
    servicer, _ = fake_runs
    response = await client.get(
        "/v1/runs?pageSize=7&workflow=workflows/w",
        headers={**bearer("viewer"), "x-request-timeout": "2.5"},
    )
    assert response.status_code == 200
    assert response.json() == {"runs": [response.json()["runs"][0]], "nextPageToken": "t2"}
    assert servicer.requests[-1].page_size == 7
    assert servicer.requests[-1].workflow == "workflows/w"
    deadline = servicer.deadlines[-1]
    assert deadline is not None and 2 < deadline <= 2.6  # grpc-timeout rounds up slightly


async def test_error_passes_through_with_error_info(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs/missing", headers=bearer("viewer"))
    assert response.status_code == 404
    payload = response.json()
    assert payload["code"] == code_pb2.NOT_FOUND
    assert payload["message"] == "runs/missing not found"
    (info,) = payload["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "RUN_NOT_FOUND"
    assert info["domain"] == "agentflow.dev"
    assert info["metadata"] == {"run": "runs/missing"}


async def test_deadline_exceeded_is_504(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs/slow", headers={**bearer(), "x-request-timeout": "0.2"})
    assert response.status_code == 504
    assert response.json()["code"] == code_pb2.DEADLINE_EXCEEDED


async def test_watch_run_streams_ndjson(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs/r1:watch?afterSeq=1", headers=bearer("viewer"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [line["result"]["seq"] for line in lines] == ["2", "3"]
    assert lines[0]["result"]["run"] == "runs/r1"
    assert lines[0]["result"]["type"] == "RUN_EVENT_TYPE_STEP_STARTED"
    assert lines[0]["result"]["data"] == {"n": 2.0}


async def test_stream_error_is_the_last_line(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs/fail:watch", headers=bearer("viewer"))
    assert response.status_code == 200  # headers went out with the first event
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [line["result"]["seq"] for line in lines[:-1]] == ["1", "2", "3"]
    error = lines[-1]["error"]
    assert error["code"] == code_pb2.FAILED_PRECONDITION
    assert error["details"][0]["reason"] == "STEP_FAILED"


async def test_cancel_verb_routes_to_cancel(
    client: httpx.AsyncClient, fake_runs: tuple[FakeRunService, str]
) -> None:
    response = await client.post("/v1/runs/r9:cancel", json={"reason": "no"}, headers=bearer())
    assert response.status_code == 200
    assert response.json()["state"] == "RUN_STATE_CANCELLED"
    assert fake_runs[0].requests[-1].name == "runs/r9"
    assert fake_runs[0].requests[-1].reason == "no"


async def test_missing_token_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    payload = response.json()
    assert payload["code"] == code_pb2.UNAUTHENTICATED
    assert payload["details"][0]["reason"] == "TOKEN_MISSING"


async def test_expired_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs", headers=bearer(exp_in=-5))
    assert response.status_code == 401
    assert response.json()["details"][0]["reason"] == "TOKEN_EXPIRED"


async def test_viewer_cannot_post(client: httpx.AsyncClient, fake_runs: tuple[FakeRunService, str]) -> None:
    response = await client.post("/v1/runs", json={"workflow": "workflows/w"}, headers=bearer("viewer"))
    assert response.status_code == 403
    assert response.json()["code"] == code_pb2.PERMISSION_DENIED
    assert fake_runs[0].requests == []


async def test_unknown_field_is_400_with_bad_request(
    client: httpx.AsyncClient, fake_runs: tuple[FakeRunService, str]
) -> None:
    response = await client.post("/v1/runs", json={"workflow": "w", "bogus": 1}, headers=bearer())
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == code_pb2.INVALID_ARGUMENT
    bad = next(d for d in payload["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert bad["fieldViolations"][0]["field"] == "bogus"
    assert fake_runs[0].requests == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/runs", content=b"{oops", headers={**bearer(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == code_pb2.INVALID_ARGUMENT


async def test_bad_timeout_header_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs", headers={**bearer(), "x-request-timeout": "soon"})
    assert response.status_code == 400


async def test_unknown_path_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing", headers=bearer())
    assert missing.status_code == 404
    assert missing.json()["code"] == code_pb2.NOT_FOUND
    wrong = await client.delete("/v1/runs", headers=bearer())
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"
    assert wrong.json()["code"] == code_pb2.UNIMPLEMENTED


async def test_unreachable_backend_is_503(route_table: RouteTable) -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    app = GatewayApp(route_table, Backends(OneChannel(channel)), Authenticator(HS256Verifier(SECRET)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
        response = await http.get("/v1/runs/r1", headers=bearer())
    await channel.close(None)
    assert response.status_code == 503
    assert response.json()["code"] == code_pb2.UNAVAILABLE
