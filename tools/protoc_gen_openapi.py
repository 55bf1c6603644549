"""protoc plugin: one OpenAPI 3.0.3 document, `openapi.yaml`, for the REST/JSON edge.

It documents every RPC of the files to generate that carries a `google.api.http` rule, with
grpc-gateway's transcoding rules: path variables from the URL template (`{name=runs/*}` is
rendered as `runs/{run}` so that paths of different resources stay distinct), the body from
`body` (`*` is the request minus its path fields), every other field as a query parameter
named by its proto JSON name, server streams as newline-delimited JSON, errors as
`google.rpc.Status`. Schemas use proto3 JSON mapping (int64 as string, Timestamp as
date-time, ...). Internal services (names ending in `IngestService`) are left out.
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

Schema = dict[str, Any]
FDP = descriptor_pb2.FieldDescriptorProto
OUTPUT_NAME = "openapi.yaml"
STATUS = "google.rpc.Status"
JSON, NDJSON = "application/json", "application/x-ndjson"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_INT64: Schema = {"type": "string", "format": "int64"}
_UINT64: Schema = {"type": "string", "format": "uint64"}
SCALARS: dict[int, Schema] = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    FDP.TYPE_INT64: _INT64,
    FDP.TYPE_SINT64: _INT64,
    FDP.TYPE_SFIXED64: _INT64,
    FDP.TYPE_UINT64: _UINT64,
    FDP.TYPE_FIXED64: _UINT64,
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types as proto3 JSON writes them. The first group can also be a query parameter.
QUERY_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.DoubleValue": SCALARS[FDP.TYPE_DOUBLE],
    "google.protobuf.FloatValue": SCALARS[FDP.TYPE_FLOAT],
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": SCALARS[FDP.TYPE_INT32],
    "google.protobuf.UInt32Value": SCALARS[FDP.TYPE_UINT32],
    "google.protobuf.BoolValue": SCALARS[FDP.TYPE_BOOL],
    "google.protobuf.StringValue": SCALARS[FDP.TYPE_STRING],
    "google.protobuf.BytesValue": SCALARS[FDP.TYPE_BYTES],
}
WELL_KNOWN: dict[str, Schema] = {
    **QUERY_WELL_KNOWN,
    "google.protobuf.Struct": {"type": "object", "additionalProperties": {}},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": {},
    },
}


class PluginError(Exception):
    """A problem in the input that the generated document cannot express."""


@dataclass
class Index:
    """Every message and enum of the request by full name, and the leading comments."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)

    def add_file(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        comments = {
            tuple(loc.path): _clean(loc.leading_comments)
            for loc in file.source_code_info.location
            if loc.leading_comments.strip()
        }
        prefix = f"{file.package}." if file.package else ""

        def doc(name: str, path: tuple[int, ...]) -> None:
            if path in comments:
                self.docs[name] = comments[path]

        def enum(e: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]) -> None:
            self.enums[name] = e
            doc(name, path)
            for i, value in enumerate(e.value):
                doc(f"{name}.{value.name}", (*path, 2, i))

        def message(m: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]) -> None:
            self.messages[name] = m
            doc(name, path)
            for i, fld in enumerate(m.field):
                doc(f"{name}.{fld.name}", (*path, 2, i))
            for i, nested in enumerate(m.nested_type):
                message(nested, f"{name}.{nested.name}", (*path, 3, i))
            for i, nested_enum in enumerate(m.enum_type):
                enum(nested_enum, f"{name}.{nested_enum.name}", (*path, 4, i))

        for i, m in enumerate(file.message_type):
            message(m, prefix + m.name, (4, i))
        for i, e in enumerate(file.enum_type):
            enum(e, prefix + e.name, (5, i))
        for i, service in enumerate(file.service):
            doc(prefix + service.name, (6, i))
            for j, method in enumerate(service.method):
                doc(f"{prefix}{service.name}.{method.name}", (6, i, 2, j))


@dataclass(frozen=True)
class PathParam:
    name: str
    field_path: str
    pattern: str
    value: str  # how the field's value is formed, e.g. `runs/{run}`; empty for plain `{name}`


class Builder:
    """Builds operations and the component schemas they reference."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.wanted: set[str] = set()

    # --- schemas -------------------------------------------------------------------------

    def ref(self, type_name: str) -> Schema:
        name = type_name.lstrip(".")
        if name in WELL_KNOWN:
            return copy.deepcopy(WELL_KNOWN[name])
        if name not in self.index.messages and name not in self.index.enums and name != STATUS:
            raise PluginError(f"unknown type {name}")
        self.wanted.add(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def map_entry(self, fld: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto | None:
        if fld.type != FDP.TYPE_MESSAGE:
            return None
        entry = self.index.messages.get(fld.type_name.lstrip("."))
        return entry if entry is not None and entry.options.map_entry else None

    def value_schema(self, fld: descriptor_pb2.FieldDescriptorProto) -> Schema:
        if fld.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            return self.ref(fld.type_name)
        return copy.deepcopy(SCALARS[fld.type])

    def shape(self, fld: descriptor_pb2.FieldDescriptorProto) -> Schema:
        """The schema of a field's JSON value, without its description."""
        entry = self.map_entry(fld)
        if entry is not None:
            return {"type": "object", "additionalProperties": self.value_schema(entry.field[1])}
        if fld.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": self.value_schema(fld)}
        return self.value_schema(fld)

    def field_schema(self, owner: str, fld: descriptor_pb2.FieldDescriptorProto) -> Schema:
        return self.annotate(self.shape(fld), owner, fld)

    def annotate(self, schema: Schema, owner: str, fld: descriptor_pb2.FieldDescriptorProto) -> Schema:
        extra: Schema = {}
        if doc := self.index.docs.get(f"{owner}.{fld.name}"):
            extra["description"] = doc
        behaviors = _behaviors(fld)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            extra["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            extra["writeOnly"] = True
        if extra and "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref
            schema = {"allOf": [schema]}
        return {**schema, **extra}

    def message_schema(self, name: str, exclude: frozenset[str] = frozenset()) -> Schema:
        """The schema of message `name` without the fields at the dotted paths in `exclude`."""
        properties: Schema = {}
        required: list[str] = []
        for fld in self.index.messages[name].field:
            if fld.name in exclude:
                continue
            inner = frozenset(p.split(".", 1)[1] for p in exclude if p.startswith(f"{fld.name}."))
            if inner:
                schema = self.annotate(self.message_schema(fld.type_name.lstrip("."), inner), name, fld)
            else:
                schema = self.field_schema(name, fld)
            properties[_json_name(fld)] = schema
            if field_behavior_pb2.REQUIRED in _behaviors(fld):
                required.append(_json_name(fld))
        schema = {"type": "object"}
        if doc := self.index.docs.get(name):
            schema["description"] = doc
        if properties:
            schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def enum_schema(self, name: str) -> Schema:
        values = [v.name for v in self.index.enums[name].value]
        docs = self.index.docs
        lines = [f" - `{v}`: {docs[f'{name}.{v}']}" for v in values if f"{name}.{v}" in docs]
        doc = "\n\n".join(part for part in (self.index.docs.get(name, ""), "\n".join(lines)) if part)
        schema: Schema = {"type": "string"}
        if doc:
            schema["description"] = doc
        schema["enum"] = values
        return schema

    def components(self) -> dict[str, Schema]:
        done: dict[str, Schema] = {}
        while pending := sorted(self.wanted - done.keys()):
            for name in pending:
                if name in self.index.enums:
                    done[name] = self.enum_schema(name)
                elif name in self.index.messages:
                    done[name] = self.message_schema(name)
                else:
                    done[name] = copy.deepcopy(FALLBACK_STATUS)
        return {name: done[name] for name in sorted(done)}

    # --- operations ----------------------------------------------------------------------

    def resolve(self, message: str, path: str) -> tuple[str, descriptor_pb2.FieldDescriptorProto]:
        """The owning message and descriptor of the field at dotted `path` in `message`."""
        owner, *rest = path.split(".", 1)
        for fld in self.index.messages[message].field:
            if fld.name == owner:
                if not rest:
                    return message, fld
                if fld.type != FDP.TYPE_MESSAGE:
                    break
                return self.resolve(fld.type_name.lstrip("."), rest[0])
        raise PluginError(f"{message} has no field {path}")

    def json_path(self, message: str, path: str) -> str:
        parts: list[str] = []
        for depth in range(path.count(".") + 1):
            _, fld = self.resolve(message, ".".join(path.split(".")[: depth + 1]))
            parts.append(_json_name(fld))
        return ".".join(parts)

    def query_params(
        self,
        message: str,
        exclude: set[str],
        prefix: tuple[str, str] = ("", ""),
        seen: frozenset[str] = frozenset(),
    ) -> list[Schema]:
        """Query parameters for the fields of `message` not in `exclude`, flattened grpc-gateway style."""
        params: list[Schema] = []
        proto_prefix, json_prefix = prefix
        seen = seen | {message}
        for fld in self.index.messages[message].field:
            proto_path, json_path = proto_prefix + fld.name, json_prefix + _json_name(fld)
            type_name = fld.type_name.lstrip(".")
            if proto_path in exclude or self.map_entry(fld) is not None:
                continue
            if fld.type == FDP.TYPE_MESSAGE and type_name not in QUERY_WELL_KNOWN:
                repeated = fld.label == FDP.LABEL_REPEATED
                if not repeated and type_name not in WELL_KNOWN and type_name not in seen:
                    # a singular message flattens to `parent.child` parameters; others cannot be sent
                    prefixes = (f"{proto_path}.", f"{json_path}.")
                    params += self.query_params(type_name, exclude, prefixes, seen)
                continue
            param: Schema = {"name": json_path, "in": "query"}
            if doc := self.index.docs.get(f"{message}.{fld.name}"):
                param["description"] = doc
            if field_behavior_pb2.REQUIRED in _behaviors(fld):
                param["required"] = True
            param["schema"] = self.shape(fld)
            params.append(param)
        return params

    def path_param(self, request: str, p: PathParam) -> Schema:
        owner, fld = self.resolve(request, p.field_path)
        doc = self.index.docs.get(f"{owner}.{fld.name}", "")
        schema = copy.deepcopy(SCALARS.get(fld.type, {"type": "string"}))
        if p.value:  # a segment of a resource name
            schema = {"type": "string", "pattern": p.pattern}
            doc = f"{doc}\n\nSets `{self.json_path(request, p.field_path)}` to `{p.value}`.".strip()
        param: Schema = {"name": p.name, "in": "path"}
        if doc:
            param["description"] = doc
        return {**param, "required": True, "schema": schema}

    def request(self, request: str, body: str, bound: set[str]) -> tuple[Schema | None, list[Schema]]:
        """The request body schema (if any) and the query parameters: grpc-gateway's body mapping."""
        if body == "*":
            return (self.message_schema(request, frozenset(bound)) if bound else self.ref(request)), []
        if not body:
            return None, self.query_params(request, bound)
        owner, fld = self.resolve(request, body)
        inner = frozenset(p.split(".", 1)[1] for p in bound if p.startswith(f"{body}."))
        if inner:
            schema = self.annotate(self.message_schema(fld.type_name.lstrip("."), inner), owner, fld)
        else:
            schema = self.field_schema(owner, fld)
        return schema, self.query_params(request, bound | {body})

    def responses(self, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule) -> Schema:
        result = self.ref(method.output_type)
        if rule.response_body:
            owner, fld = self.resolve(method.output_type.lstrip("."), rule.response_body)
            result = self.field_schema(owner, fld)
        if method.server_streaming:
            line = {
                "type": "object",
                "description": "One line of the stream: a `result`, or an `error` that ends the stream.",
                "properties": {"result": result, "error": self.ref(STATUS)},
            }
            ok = {
                "description": "A stream of newline-delimited JSON objects.",
                "content": {NDJSON: {"schema": line}},
            }
        else:
            ok = {"description": "A successful response.", "content": {JSON: {"schema": result}}}
        error = {"description": "An error.", "content": {JSON: {"schema": self.ref(STATUS)}}}
        return {"200": ok, "default": error}

    def operation(
        self, service: str, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule
    ) -> tuple[str, str, Schema]:
        """The path, HTTP method and OpenAPI operation of one binding of `method`."""
        verb = rule.WhichOneof("pattern")
        if verb is None:
            raise PluginError(f"{service}.{method.name}: http rule without a pattern")
        verb, template = (
            (rule.custom.kind.lower(), rule.custom.path) if verb == "custom" else (verb, getattr(rule, verb))
        )
        if verb not in HTTP_METHODS:
            raise PluginError(f"{service}.{method.name}: unsupported HTTP method {verb}")
        request = method.input_type.lstrip(".")
        path, path_params = _parse_template(template)
        body, query = self.request(request, rule.body, {p.field_path for p in path_params})
        parameters = [self.path_param(request, p) for p in path_params] + query

        short = service.rsplit(".", 1)[-1]
        op: Schema = {"tags": [short]}
        summary, _, description = self.index.docs.get(f"{service}.{method.name}", "").partition("\n\n")
        if summary:
            op["summary"] = summary
        if description:
            op["description"] = description
        op["operationId"] = f"{short}_{method.name}"
        if parameters:
            op["parameters"] = parameters
        if body is not None:
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
        op["responses"] = self.responses(method, rule)
        return path, verb, op


FALLBACK_STATUS: Schema = {
    "type": "object",
    "description": "The error model of gRPC and the REST edge (google.rpc.Status).",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": WELL_KNOWN["google.protobuf.Any"]},
    },
}


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    return "\n".join(line.rstrip() for line in lines).strip()


def _json_name(fld: descriptor_pb2.FieldDescriptorProto) -> str:
    return fld.json_name or re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), fld.name)


def _behaviors(fld: descriptor_pb2.FieldDescriptorProto) -> list[int]:
    return list(fld.options.Extensions[field_behavior_pb2.field_behavior])


def _singular(collection: str) -> str:
    if collection.endswith("ies"):
        return collection[:-3] + "y"
    if re.search(r"(s|x|ch|sh)es$", collection):
        return collection[:-2]
    return collection[:-1] if collection.endswith("s") else ""


def _parse_template(template: str) -> tuple[str, list[PathParam]]:
    """`/v1/{name=runs/*}:cancel` -> (`/v1/runs/{run}:cancel`, [run: sets name to runs/{run}])."""
    params: list[PathParam] = []
    taken: set[str] = set()

    def unique(name: str) -> str:
        name = next(f"{name}{n or ''}" for n in range(len(taken) + 2) if f"{name}{n or ''}" not in taken)
        taken.add(name)
        return name

    def variable(match: re.Match[str]) -> str:
        field_path, segments = match.group(1), match.group(2)
        leaf = field_path.rsplit(".", 1)[-1]
        if segments is None:
            params.append(PathParam(unique(leaf), field_path, "[^/]+", ""))
            return "{" + params[-1].name + "}"
        parts, wildcards = segments.split("/"), []
        for i, part in enumerate(parts):
            if part in ("*", "**"):
                parts[i] = "{" + unique((_singular(parts[i - 1]) if i else "") or leaf) + "}"
                wildcards.append((parts[i][1:-1], "[^/]+" if part == "*" else ".+"))
        value = "/".join(parts)
        params.extend(PathParam(name, field_path, pattern, value) for name, pattern in wildcards)
        return value

    path = re.sub(r"\{([\w.]+)(?:=([^}]*))?\}", variable, template)
    return path, params


def generate(request: plugin_pb2.CodeGeneratorRequest) -> str:
    index = Index()
    for file in request.proto_file:
        index.add_file(file)
    builder = Builder(index)
    paths: dict[str, dict[str, Schema]] = {}
    tags: dict[str, Schema] = {}
    targets = set(request.file_to_generate)
    for file in request.proto_file:
        if file.name not in targets:
            continue
        for service in file.service:
            if service.name.endswith("IngestService"):  # internal: never exposed at the edge
                continue
            full = f"{file.package}.{service.name}" if file.package else service.name
            for method in service.method:
                if method.client_streaming or not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for n, binding in enumerate([rule, *rule.additional_bindings], start=1):
                    path, verb, op = builder.operation(full, method, binding)
                    if n > 1:
                        op["operationId"] += f"_{n}"
                    if verb in paths.setdefault(path, {}):
                        raise PluginError(f"{verb.upper()} {path} is bound twice ({op['operationId']})")
                    paths[path][verb] = op
                    tags[service.name] = {"name": service.name, "description": index.docs.get(full, "")}
    document: Schema = {
        "openapi": "3.0.3",
        "info": {
            "title": "AgentFlow API",
            "description": "The REST/JSON edge of the AgentFlow mesh, transcoded from the gRPC services "
            "by their `google.api.http` rules. Generated from protos/ by tools/protoc_gen_openapi.py.",
            "version": "v1",
        },
        "tags": [tags[name] for name in sorted(tags)],
        "security": [{"bearerAuth": []}],
        "paths": {
            path: {verb: paths[path][verb] for verb in HTTP_METHODS if verb in paths[path]}
            for path in sorted(paths)
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": builder.components(),
        },
    }
    header = "# Generated by tools/protoc_gen_openapi.py from protos/. DO NOT EDIT.\n"
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    try:
        response.file.add(name=OUTPUT_NAME, content=generate(request))
    except PluginError as exc:
        response.error = str(exc)
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
