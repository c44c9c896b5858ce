"""Every `google.api.http` rule of the platform's services, as routes.

Built from the generated descriptors at start-up: one route per rule and per
additional binding, ordered so that custom methods (`:verb`) and the most
literal templates are tried first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor

from services.gateway.path_templates import PathTemplate, parse_template

HTTP_BODY = "google.api.HttpBody"
# The googleapis stubs type extensions loosely; these are the extension handles.
HTTP_RULE: Any = annotations_pb2.http


class RouteError(ValueError):
    """A rule the gateway cannot serve as written."""


@dataclass(frozen=True)
class Route:
    http_method: str
    template: PathTemplate
    body: str  # "" (none), "*" or a top-level field name
    response_body: str
    method: MethodDescriptor
    service: str  # the platform's service name (topology key)

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        return f"{self.method.containing_service.name}_{self.method.name}"

    @property
    def streams_request(self) -> bool:
        return self.method.client_streaming

    @property
    def streams_response(self) -> bool:
        return self.method.server_streaming

    @property
    def returns_http_body(self) -> bool:
        return self.method.output_type.full_name == HTTP_BODY


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError("rule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), str(getattr(rule, kind))


def _check(route: Route) -> None:
    """The rule constraints of http.proto that the transcoder relies on."""
    request = route.method.input_type
    for variable in route.template.variables:
        field = leaf_field(request, variable.field_path)
        if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE:
            raise RouteError(f"{route.template.text}: path variable {variable.field_path} must be a singular scalar")
    if route.body not in ("", "*") and route.body not in request.fields_by_name:
        raise RouteError(f"{route.template.text}: body field {route.body!r} is not a top-level request field")
    if route.response_body and route.response_body not in route.method.output_type.fields_by_name:
        raise RouteError(f"{route.template.text}: response_body {route.response_body!r} is not a response field")


def leaf_field(message: Descriptor, path: str) -> FieldDescriptor:
    """The field a dotted path of proto names ends at."""
    descriptor: Descriptor | None = message
    field: FieldDescriptor | None = None
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part) if descriptor is not None else None
        if field is None:
            raise RouteError(f"no field {path!r} in {message.full_name}")
        descriptor = field.message_type
    assert field is not None
    return field


def routes_of(service: ServiceDescriptor, service_name: str) -> list[Route]:
    routes: list[Route] = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(HTTP_RULE):
            raise RouteError(f"{method.full_name} has no google.api.http rule")
        rule: http_pb2.HttpRule = options.Extensions[HTTP_RULE]
        for binding in [rule, *rule.additional_bindings]:
            if binding is not rule and binding.additional_bindings:
                raise RouteError(f"{method.full_name}: additional bindings cannot nest")
            verb, path = _pattern(binding)
            route = Route(verb, parse_template(path), binding.body, binding.response_body, method, service_name)
            _check(route)
            routes.append(route)
    return routes


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(
            routes, key=lambda r: (not r.template.verb, -r.template.literal_count, -len(r.template.segments))
        )

    def match(self, http_method: str, path: str) -> tuple[Route, dict[str, str]] | tuple[None, list[str]]:
        """The route and its bound variables; or None and the methods the path allows."""
        allowed: list[str] = []
        for route in self.routes:
            bound = route.template.match(path)
            if bound is None:
                continue
            if route.http_method == http_method or (http_method == "HEAD" and route.http_method == "GET"):
                return route, bound
            allowed.append(route.http_method)
        return None, sorted(set(allowed))
