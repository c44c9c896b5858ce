"""Messages to proto3-JSON-shaped dicts, fast, for hot paths.

`json_format.MessageToDict` is written in Python and re-inspects every field
descriptor on every call. Here each message type is compiled once into a
plan (field name, kind, sub-plan), and a message is converted by plain
attribute reads. The result has the shape of
`MessageToDict(preserving_proto_field_name=True)` for messages without maps,
floats, oneofs of scalars or well-known types other than Timestamp (a test
holds it to that), so `json_format.ParseDict` reads it back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
Convert = Callable[[Any], Any]
_plans: dict[str, list[tuple[str, bool, bool, Convert | None]]] = {}


def _enum_names(field: FieldDescriptor) -> Convert:
    names = {v.number: v.name for v in field.enum_type.values} if field.enum_type is not None else {}
    return lambda number: names.get(number, number)


def _plan(descriptor: Any) -> list[tuple[str, bool, bool, Convert | None]]:
    """(name, is message, is repeated, value conversion) for each field."""
    plan = _plans.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = []
    for field in descriptor.fields:
        convert: Convert | None = None
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message:
            assert field.message_type is not None
            convert = _timestamp if field.message_type.full_name == "google.protobuf.Timestamp" else to_dict
        elif field.type == FieldDescriptor.TYPE_ENUM:
            convert = _enum_names(field)
        elif field.type in _INT64:
            convert = str
        elif field.type in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            raise TypeError(f"{field.full_name}: bytes and floating point fields are not supported here")
        plan.append((field.name, is_message, field.is_repeated, convert))
    _plans[descriptor.full_name] = plan
    return plan


def _timestamp(value: Any) -> str:
    return str(value.ToJsonString())


def to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, is_message, repeated, convert in _plan(message.DESCRIPTOR):
        if repeated:
            items = getattr(message, name)
            if items:
                out[name] = [convert(item) for item in items] if convert else list(items)
        elif is_message:
            if message.HasField(name):
                out[name] = convert(getattr(message, name))  # type: ignore[misc]
        else:
            value = getattr(message, name)
            if value:  # proto3 scalars are absent at their default
                out[name] = convert(value) if convert else value
    return out


# ------------------------------------------------ proto3 JSON as gateways write it
#
# lowerCamelCase keys and every field without presence printed at its zero
# value (grpc-gateway's `EmitUnpopulated`), for the message types made only of
# scalars, enums, nested messages and Timestamps; `json_plan` is None for the
# others (maps, bytes, floating point, Any, Struct...), which callers hand to
# `json_format.MessageToDict` instead.

JsonPlan = list[tuple[str, str, bool, bool, Convert | None]]
_json_plans: dict[str, JsonPlan | None] = {}
_UNSUPPORTED = frozenset({FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


def json_plan(descriptor: Any) -> JsonPlan | None:
    """(JSON key, field name, repeated, has presence, conversion) per field, or None."""
    name = descriptor.full_name
    if name in _json_plans:
        return _json_plans[name]
    _json_plans[name] = None  # a recursive type is unsupported until proven otherwise
    plan: JsonPlan = []
    for field in descriptor.fields:
        convert: Convert | None = None
        if field.type in _UNSUPPORTED:
            return None
        if field.message_type is not None:
            message = field.message_type
            if message.GetOptions().map_entry:
                return None
            if message.full_name == "google.protobuf.Timestamp":
                convert = _timestamp
            elif message.full_name.startswith("google.protobuf.") or json_plan(message) is None:
                return None
            else:
                convert = to_json_dict
        elif field.enum_type is not None:
            convert = _enum_names(field)
        elif field.type in _INT64:
            convert = str
        plan.append((field.json_name, field.name, field.is_repeated, field.has_presence, convert))
    _json_plans[name] = plan
    return plan


def to_json_dict(message: Message) -> dict[str, Any]:
    """`MessageToDict(message, always_print_fields_with_no_presence=True)`, when `json_plan` allows."""
    plan = json_plan(message.DESCRIPTOR)
    assert plan is not None, message.DESCRIPTOR.full_name
    out: dict[str, Any] = {}
    for key, name, repeated, presence, convert in plan:
        if repeated:
            items = getattr(message, name)
            out[key] = [convert(item) for item in items] if convert else list(items)
        elif presence and not message.HasField(name):
            continue
        else:
            value = getattr(message, name)
            out[key] = convert(value) if convert else value
    return out
