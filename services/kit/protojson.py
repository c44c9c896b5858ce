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
