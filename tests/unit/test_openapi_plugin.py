"""tools/protoc_gen_openapi.py, run as protoc runs it, on the repository's protos and on a small one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tools" / "protoc_gen_openapi.py"
SCHEMAS = "#/components/schemas/"


def build_request(proto_root: Path) -> bytes:
    """A CodeGeneratorRequest for every .proto under `proto_root`, as buf or protoc would send it."""
    names = sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("*.proto"))
    out = proto_root / "set.binpb"
    # `python -m grpc_tools.protoc` adds the well-known types to the include path itself.
    args = [f"-I{proto_root}", f"-I{ROOT / 'third_party' / 'googleapis'}", f"--descriptor_set_out={out}"]
    args += ["--include_imports", "--include_source_info", *names]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return plugin_pb2.CodeGeneratorRequest(file_to_generate=names, proto_file=files).SerializeToString()


def run_plugin(request: bytes) -> str:
    done = subprocess.run([sys.executable, str(PLUGIN)], input=request, capture_output=True, check=True)
    response = plugin_pb2.CodeGeneratorResponse.FromString(done.stdout)
    assert response.error == ""
    assert [f.name for f in response.file] == ["openapi.yaml"]
    return response.file[0].content


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


@pytest.fixture(scope="module")
def repo_request(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    protos = tmp_path_factory.mktemp("protos")
    for source in (ROOT / "protos").rglob("*.proto"):
        target = protos / source.relative_to(ROOT / "protos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return build_request(protos)


@pytest.fixture(scope="module")
def text(repo_request: bytes) -> str:
    return run_plugin(repo_request)


@pytest.fixture(scope="module")
def doc(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_document_is_openapi_3_0_3_and_every_ref_resolves(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.0.3"
    schemas = doc["components"]["schemas"]
    assert {ref.removeprefix(SCHEMAS) for ref in refs(doc)} <= schemas.keys()
    assert list(doc["paths"]) == sorted(doc["paths"])
    assert list(schemas) == sorted(schemas)


def test_cancel_run_is_a_post_on_the_custom_verb(doc: dict[str, Any]) -> None:
    cancel = doc["paths"]["/v1/runs/{run}:cancel"]["post"]
    assert cancel["operationId"] == "RunService_CancelRun"
    assert cancel["tags"] == ["RunService"]
    assert cancel["summary"].startswith("Cancels a run that has not finished.")
    [param] = cancel["parameters"]
    assert param["name"] == "run" and param["in"] == "path" and param["required"] is True
    assert param["schema"] == {"type": "string", "pattern": "[^/]+"}
    assert "Sets `name` to `runs/{run}`." in param["description"]
    # body "*" is the request without its path fields
    assert list(body_schema(cancel)["properties"]) == ["reason"]
    assert cancel["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": SCHEMAS + "agentflow.runs.v1.Run"
    }
    assert cancel["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": SCHEMAS + "google.rpc.Status"
    }


def test_watch_run_streams_ndjson_results_and_errors(doc: dict[str, Any]) -> None:
    watch = doc["paths"]["/v1/runs/{run}:watch"]["get"]
    content = watch["responses"]["200"]["content"]
    assert list(content) == ["application/x-ndjson"]
    line = content["application/x-ndjson"]["schema"]["properties"]
    assert line["result"] == {"$ref": SCHEMAS + "agentflow.runs.v1.RunEvent"}
    assert line["error"] == {"$ref": SCHEMAS + "google.rpc.Status"}
    after_seq = next(p for p in watch["parameters"] if p["name"] == "afterSeq")
    assert after_seq["in"] == "query"
    assert after_seq["schema"] == {"type": "string", "format": "int64"}


def test_list_runs_takes_camel_case_query_parameters(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/v1/runs"]["get"]["parameters"]}
    assert list(params) == ["pageSize", "pageToken", "workflow"]
    assert params["pageSize"]["in"] == "query"
    assert params["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert params["pageSize"]["description"] == "Maximum results per page (default 50, max 500)."
    assert "requestBody" not in doc["paths"]["/v1/runs"]["get"]


def test_body_field_mapping(doc: dict[str, Any]) -> None:
    put = doc["paths"]["/v1/memories/{memory}"]["put"]
    assert "name" not in body_schema(put)["properties"]  # bound by the path: `memory.name`
    assert "text" in body_schema(put)["properties"]
    create = doc["paths"]["/v1/tools"]["post"]
    assert body_schema(create)["allOf"] == [{"$ref": SCHEMAS + "agentflow.tools.v1.Tool"}]
    assert [(p["name"], p["in"], p.get("required")) for p in create["parameters"]] == [
        ("toolId", "query", True)
    ]


def test_schemas_follow_proto3_json(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    run = schemas["agentflow.runs.v1.Run"]["properties"]
    assert run["createTime"]["format"] == "date-time" and run["createTime"]["type"] == "string"
    assert run["lastEventSeq"]["type"] == "string" and run["lastEventSeq"]["format"] == "int64"
    assert run["input"]["type"] == "object"
    assert "type" not in run["output"]  # google.protobuf.Value: any JSON
    assert run["labels"]["additionalProperties"] == {"type": "string"}
    assert run["state"]["allOf"] == [{"$ref": SCHEMAS + "agentflow.runs.v1.RunState"}]
    assert schemas["agentflow.tools.v1.OutputChunk"]["properties"]["data"]["format"] == "byte"
    state = schemas["agentflow.runs.v1.RunState"]
    assert state["type"] == "string" and "RUN_STATE_CANCELLED" in state["enum"]
    assert "`RUN_STATE_PENDING`: Accepted, not yet picked up by a worker." in state["description"]
    assert schemas["agentflow.runs.v1.Run"]["description"] == "Run is one execution of a workflow plan."
    assert schemas["agentflow.runs.v1.StartRunRequest"]["required"] == ["workflow"]
    assert schemas["agentflow.memory.v1.Memory"]["properties"]["createTime"]["readOnly"] is True
    assert "google.rpc.Status" in schemas
    delete = doc["paths"]["/v1/tools/{tool}"]["delete"]["responses"]["200"]
    assert delete["content"]["application/json"]["schema"] == {"type": "object"}  # Empty


def test_internal_ingest_service_is_left_out(doc: dict[str, Any], text: str) -> None:
    assert "AuditIngestService" not in text
    assert "/v1/auditEvents:append" not in doc["paths"]
    assert "agentflow.audit.v1.AppendAuditEventsRequest" not in doc["components"]["schemas"]
    assert "/v1/auditEvents:verify" in doc["paths"]


def test_output_is_deterministic(repo_request: bytes, text: str) -> None:
    assert run_plugin(repo_request) == text


SMALL = """
syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";

// Shelves of books.
service ShelfService {
  // Gets a book, also by its short path.
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = {
      get: "/v1/{name=publishers/*/books/*}"
      additional_bindings {get: "/v1/books/{name}"}
    };
  }
  // Updates a book.
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {patch: "/v1/{book.name=publishers/*/books/*}" body: "book"};
  }
  // Not at the edge: client streaming.
  rpc Upload(stream Book) returns (Book) {
    option (google.api.http) = {post: "/v1/books:upload" body: "*"};
  }
}

// A book.
message Book {
  // `publishers/{publisher}/books/{book}`.
  string name = 1;
  // Its title.
  string title = 2;
  // Its author.
  Person author = 3;
}

// A person.
message Person {
  // Name.
  string display_name = 1;
  // Friends.
  repeated Person friends = 2;
  // Mentor.
  Person mentor = 3;
}

// Request for GetBook.
message GetBookRequest {
  // The book.
  string name = 1;
  // Who asks.
  Person reader = 2;
}

// Request for UpdateBook.
message UpdateBookRequest {
  // The book.
  Book book = 1;
}
"""


def test_multi_segment_templates_bindings_and_nested_query(tmp_path: Path) -> None:
    (tmp_path / "demo.proto").write_text(SMALL)
    doc = yaml.safe_load(run_plugin(build_request(tmp_path)))
    get = doc["paths"]["/v1/publishers/{publisher}/books/{book}"]["get"]
    path_params = [p for p in get["parameters"] if p["in"] == "path"]
    assert [p["name"] for p in path_params] == ["publisher", "book"]
    value = "Sets `name` to `publishers/{publisher}/books/{book}`."
    assert all(value in p["description"] for p in path_params)
    query = [p["name"] for p in get["parameters"] if p["in"] == "query"]
    assert query == ["reader.displayName"]  # repeated `friends` cannot be sent; recursive `mentor` stops
    short = doc["paths"]["/v1/books/{name}"]["get"]
    assert short["operationId"] == "ShelfService_GetBook_2"
    assert short["parameters"][0]["schema"] == {"type": "string"}
    patch = doc["paths"]["/v1/publishers/{publisher}/books/{book}"]["patch"]
    assert list(body_schema(patch)["properties"]) == ["title", "author"]
    assert "/v1/books:upload" not in doc["paths"]
