"""HTTP ⇄ protobuf for one route, by the proto3 JSON mapping.

A request message is assembled from the JSON body (per the rule's `body`),
then the query string (every field not bound by the path or the body, by
proto or JSON name, `a.b` for nested fields, repeated parameters for
repeated fields), then the path variables. Unknown fields, malformed JSON
and values of the wrong type are `TranscodeError`s naming the field, which
the gateway answers with 400 INVALID_ARGUMENT; nothing reaches the service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.gateway.routes import Route
from services.kit.protojson import json_plan, to_json_dict

# Well-known types whose JSON form is a single string or number, so they can
# be given as one query parameter.
SCALAR_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        *(
            f"google.protobuf.{name}Value"
            for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
        ),
    }
)
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


class TranscodeError(ValueError):
    """A request that cannot become the RPC's message; `field` names the culprit."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def parse_json(raw: bytes, what: str = "body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TranscodeError(what, "MALFORMED_JSON", f"the request {what} is not valid JSON: {exc}") from exc


_UNKNOWN = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')
_FAILED = re.compile(r"^Failed to parse (\w+) field: ")


def field_path_of(error: str, root: str) -> tuple[str, str]:
    """The JSON path of the field a `json_format` error is about, and its reason."""
    unknown = _UNKNOWN.search(error)
    if unknown:
        inner = unknown.group(2).partition(".")[2]
        path = ".".join(p for p in (root, inner, unknown.group(1)) if p)
        return path, "UNKNOWN_FIELD"
    names = []
    while match := _FAILED.match(error):
        names.append(match.group(1))
        error = error[match.end() :]
    return ".".join(p for p in (root, *names) if p) or "body", "INVALID_VALUE"


def _parse_into(value: Any, message: Message, where: str, root: str = "") -> None:
    if not isinstance(value, dict):
        raise TranscodeError(
            root or where, "WRONG_JSON_TYPE", f"{where} must be a JSON object for {message.DESCRIPTOR.full_name}"
        )
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        text = str(exc).split("\n", 1)[0]
        path, reason = field_path_of(text, root)
        raise TranscodeError(path, reason, f"{where}: {text}") from exc


def _field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _resolve(descriptor: Any, path: str) -> list[FieldDescriptor]:
    """The fields along a query parameter's dotted path (proto or JSON names)."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        field = _field_named(current, part) if current is not None else None
        if field is None:
            raise TranscodeError(path, "UNKNOWN_PARAMETER", f"query parameter {path!r} names no field of the request")
        chain.append(field)
        current = field.message_type if _is_composite(field) else None
    leaf = chain[-1]
    if _is_composite(leaf):
        raise TranscodeError(path, "NOT_A_SCALAR", f"query parameter {path!r} names a message; name its fields")
    if any(f.is_repeated for f in chain[:-1]) or (leaf.is_repeated and leaf.type == FieldDescriptor.TYPE_MESSAGE):
        raise TranscodeError(path, "NOT_A_SCALAR", f"query parameter {path!r} crosses a repeated message")
    if leaf.message_type is not None and leaf.message_type.GetOptions().map_entry:
        raise TranscodeError(path, "NOT_A_SCALAR", f"query parameter {path!r} names a map")
    return chain


def _is_composite(field: FieldDescriptor) -> bool:
    """A message field that is not one of the single-value well-known types."""
    return field.message_type is not None and field.message_type.full_name not in SCALAR_MESSAGES


def _scalar(field: FieldDescriptor, text: str, path: str) -> Any:
    """A query value as the JSON value `json_format` expects for the field."""
    boxed = field.message_type.full_name if field.message_type is not None else ""
    if field.type == FieldDescriptor.TYPE_BOOL or boxed == "google.protobuf.BoolValue":
        value = _BOOLS.get(text.lower())
        if value is None:
            raise TranscodeError(path, "INVALID_VALUE", f"query parameter {path!r} must be true or false, not {text!r}")
        return value
    return text


def _set_path(target: dict[str, Any], chain: Sequence[FieldDescriptor], value: Any, append: bool) -> None:
    node = target
    for field in chain[:-1]:
        node = node.setdefault(field.name, {})
    leaf = chain[-1].name
    if append:
        node.setdefault(leaf, []).append(value)
    else:
        node[leaf] = value


def build_request(route: Route, variables: Mapping[str, str], query: Sequence[tuple[str, str]], body: bytes) -> Message:
    """The RPC's request message for a unary or server-streaming route."""
    request = message_class(route.method.input_type)()
    fill_body(route, request, body)
    fill_query(route, request, variables, query)
    fill_path(route, request, variables)
    return request


def fill_body(route: Route, request: Message, body: bytes) -> None:
    if not route.body:
        if body.strip():
            raise TranscodeError(
                "body", "UNEXPECTED_BODY", f"{route.http_method} {route.template.text} takes no request body"
            )
        return
    if not body.strip():
        return  # an absent body is an empty message, as with grpc-gateway
    value = parse_json(body)
    if route.body == "*":
        _parse_into(value, request, "body")
        return
    field = request.DESCRIPTOR.fields_by_name[route.body]
    if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
        _parse_into(value, getattr(request, route.body), "body", root=field.json_name)
    else:
        _parse_into({route.body: value}, request, "body")


def fill_query(route: Route, request: Message, variables: Mapping[str, str], query: Sequence[tuple[str, str]]) -> None:
    if not query:
        return
    if route.body == "*":
        names = ", ".join(sorted({k for k, _ in query}))
        raise TranscodeError(
            names, "UNEXPECTED_PARAMETER", f"{route.template.text} takes every field in the body; got query {names}"
        )
    values: dict[str, Any] = {}
    for key, text in query:
        chain = _resolve(request.DESCRIPTOR, key)
        canonical = ".".join(f.name for f in chain)
        if canonical in variables or (route.body and chain[0].name == route.body):
            raise TranscodeError(key, "FIELD_ALREADY_BOUND", f"{key!r} is set by the path or the body, not the query")
        _set_path(values, chain, _scalar(chain[-1], text, key), chain[-1].is_repeated)
    _parse_into(values, request, "query")


def fill_path(route: Route, request: Message, variables: Mapping[str, str]) -> None:
    if not variables:
        return
    values: dict[str, Any] = {}
    for path, text in variables.items():
        chain = _resolve(request.DESCRIPTOR, path)
        _set_path(values, chain, text, False)
    bound = message_class(route.method.input_type)()
    _parse_into(values, bound, "path")
    request.MergeFrom(bound)


def stream_requests(route: Route, variables: Mapping[str, str], body: bytes) -> list[Message]:
    """The messages of a client-streaming route: a JSON array (or one object)."""
    value = parse_json(body) if body.strip() else []
    items = value if isinstance(value, list) else [value]
    messages = []
    for index, item in enumerate(items):
        message = message_class(route.method.input_type)()
        _parse_into(item, message, f"body[{index}]")
        fill_path(route, message, variables)
        messages.append(message)
    return messages


def to_json(message: Message, response_body: str = "") -> bytes:
    """Proto3 JSON as grpc-gateway writes it: lowerCamelCase, zero values
    printed; only the `response_body` field when the rule names one."""
    if json_plan(message.DESCRIPTOR) is not None:
        value: Any = to_json_dict(message)  # the compiled path; same output, a fraction of the time
    else:
        value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    if response_body:
        value = value.get(message.DESCRIPTOR.fields_by_name[response_body].json_name)
    return orjson.dumps(value)
