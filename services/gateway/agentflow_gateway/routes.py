"""The REST route table, built at run time from the `google.api.http` options of the public services.

Matching follows grpc-gateway: routes with a custom verb (`/v1/{name=runs/*}:cancel`) are tried before plain
ones, then more literal segments before fewer, then declaration order. A path that matches a route of
another HTTP method only is reported as such so the edge can answer 405 instead of 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from agentflow_runtime import descriptors
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message, message_factory

from agentflow_gateway.templates import PathTemplate, decode_value, parse

__all__ = ["Method", "Route", "RouteMatch", "RouteTable", "build_methods", "build_routes"]


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC of a public service, with what the edge needs to call it."""

    service: str
    name: str
    grpc_path: str
    mesh_service: str
    request_class: type[message.Message]
    response_class: type[message.Message]
    client_streaming: bool
    server_streaming: bool
    read_only: bool
    """True when the method's primary HTTP rule is a GET (what a viewer may call)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of a method."""

    http_method: str
    template: PathTemplate
    pattern: re.Pattern[str]
    method: Method
    body: str
    response_body: str

    @property
    def sort_key(self) -> tuple[bool, int, int]:
        return (self.template.verb is None, -self.template.literal_count, -len(self.template.segments))


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A matched route with its path variables (field path → decoded value)."""

    route: Route
    bindings: tuple[tuple[tuple[str, ...], str], ...]


class RouteTable:
    """Routes per HTTP method, in match order, each method's routes compiled into one alternation regex.

    Python's `re` tries alternatives left to right, so the combined pattern keeps the match order while
    matching a path in a single call; the outer group that matched names the route.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        ordered = sorted(routes, key=lambda r: r.sort_key)  # stable: declaration order breaks ties
        by_method: dict[str, list[Route]] = {}
        for route in ordered:
            by_method.setdefault(route.http_method, []).append(route)
        self._by_method: dict[str, tuple[Route, ...]] = {k: tuple(v) for k, v in by_method.items()}
        self._compiled = {k: _combine(v) for k, v in self._by_method.items()}

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(r for routes in self._by_method.values() for r in routes)

    def match(self, http_method: str, raw_path: str) -> RouteMatch | None:
        """The first route of `http_method` whose template matches the raw (percent-encoded) path."""
        compiled = self._compiled.get(http_method)
        if compiled is None:
            return None
        pattern, targets = compiled
        found = pattern.fullmatch(raw_path)
        if found is None or found.lastindex is None:
            return None
        route, first = targets[found.lastindex]
        variables = route.template.variables
        return RouteMatch(
            route,
            tuple((v.field_path, decode_value(found.group(first + i))) for i, v in enumerate(variables)),
        )

    def allowed_methods(self, raw_path: str) -> list[str]:
        """HTTP methods that have a route for this path (for 405 and `Allow`)."""
        return sorted(m for m, (pattern, _) in self._compiled.items() if pattern.fullmatch(raw_path))


def _combine(routes: Sequence[Route]) -> tuple[re.Pattern[str], dict[int, tuple[Route, int]]]:
    """One pattern for all routes; maps each route's outer group to (route, index of its first variable)."""
    parts: list[str] = []
    targets: dict[int, tuple[Route, int]] = {}
    group = 1
    for route in routes:
        parts.append(f"({route.pattern.pattern})")
        targets[group] = (route, group + 1)
        group += 1 + route.pattern.groups
    return re.compile("|".join(parts)), targets


def build_methods(service_names: Sequence[str] | None = None) -> dict[str, Method]:
    """The public services' methods by gRPC path (`/pkg.Service/Method`)."""
    pool = descriptors.load_contracts()
    methods: dict[str, Method] = {}
    for service_name in service_names or descriptors.public_services():
        service = pool.FindServiceByName(service_name)
        for method in service.methods:
            rule = _http_rule(method)
            verb = rule.WhichOneof("pattern") if rule is not None else None
            path = f"/{service.full_name}/{method.name}"
            methods[path] = Method(
                service=service.full_name,
                name=method.name,
                grpc_path=path,
                mesh_service=descriptors.SERVICE_OWNERS[service.full_name],
                request_class=message_factory.GetMessageClass(method.input_type),
                response_class=message_factory.GetMessageClass(method.output_type),
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming,
                read_only=verb == "get",
            )
    return methods


def build_routes(methods: Mapping[str, Method]) -> RouteTable:
    """Every HTTP binding (primary and additional) of the given methods."""
    pool = descriptors.load_contracts()
    routes: list[Route] = []
    for method in methods.values():
        if method.client_streaming:
            continue  # client and bidi streams have no REST binding
        method_descriptor = pool.FindMethodByName(f"{method.service}.{method.name}")
        rule = _http_rule(method_descriptor)
        if rule is None:
            continue
        for binding in (rule, *rule.additional_bindings):
            routes.append(_route(method, binding))
    return RouteTable(routes)


def _http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def _route(method: Method, rule: http_pb2.HttpRule) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError(f"{method.grpc_path}: HTTP rule without a pattern")
    if kind == "custom":
        http_method, template_text = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, template_text = kind.upper(), getattr(rule, kind)
    template = parse(template_text)
    _check_fields(method, template, rule)
    return Route(
        http_method=http_method,
        template=template,
        pattern=template.compile(),
        method=method,
        body=rule.body,
        response_body=rule.response_body,
    )


def _check_fields(method: Method, template: PathTemplate, rule: http_pb2.HttpRule) -> None:
    """Fails at startup, not per request, when a rule names a field the messages do not have."""
    request_type = cast(descriptor.Descriptor, method.request_class.DESCRIPTOR)
    for variable in template.variables:
        _resolve(request_type, variable.field_path, method.grpc_path)
    if rule.body and rule.body != "*":
        _resolve(request_type, (rule.body,), method.grpc_path)
    if rule.response_body:
        _resolve(
            cast(descriptor.Descriptor, method.response_class.DESCRIPTOR),
            (rule.response_body,),
            method.grpc_path,
        )


def _resolve(message_type: descriptor.Descriptor, path: tuple[str, ...], where: str) -> None:
    current: descriptor.Descriptor | None = message_type
    for name in path:
        if current is None or name not in current.fields_by_name:
            raise ValueError(f"{where}: no field {'.'.join(path)!r} in {message_type.full_name}")
        current = current.fields_by_name[name].message_type
