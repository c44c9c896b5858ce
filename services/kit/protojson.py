"""Messages to proto3-JSON-shaped dicts, fast, for hot paths.

`json_format.MessageToDict` is written in Python and walks every field
descriptor with much generality; this walks only the fields that are set
(`ListFields`, done in C by upb). It produces the same shape as
`MessageToDict(preserving_proto_field_name=True)` for messages without maps,
floats or well-known types other than Timestamp (a test holds it to that),
so `json_format.ParseDict` reads it back."""

from __future__ import annotations

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


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == _MESSAGE:
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        return to_dict(value)
    if field.type == _ENUM:
        found = field.enum_type.values_by_number.get(value) if field.enum_type is not None else None
        return found.name if found is not None else value
    if field.type in _INT64:
        return str(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        raise TypeError(f"{field.full_name}: bytes fields are not supported here")
    return value


_MESSAGE, _ENUM = FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM
_SPECIAL = {_MESSAGE, _ENUM, FieldDescriptor.TYPE_BYTES} | _INT64


def to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.type not in _SPECIAL:  # strings, bools, 32-bit ints: as they are
            out[field.name] = list(value) if field.is_repeated else value
        elif field.type == _MESSAGE and field.is_repeated:
            out[field.name] = [to_dict(item) for item in value]
        elif field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return out
