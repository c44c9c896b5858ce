"""The contracts' own comments, by element full name, for the OpenAPI
document (read from the descriptor set with source info in gen/)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from google.protobuf import descriptor_pb2

# FileDescriptorProto / DescriptorProto field numbers used in source paths.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _ENUM_VALUE, _METHOD = 2, 3, 4, 2, 2


def _clean(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()).strip()


def _walk_message(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str, names: dict[tuple[int, ...], str]
) -> None:
    full = f"{scope}.{message.name}"
    names[path] = full
    for i, field in enumerate(message.field):
        names[(*path, _FIELD, i)] = f"{full}.{field.name}"
    for i, nested in enumerate(message.nested_type):
        _walk_message(nested, (*path, _NESTED, i), full, names)
    for i, enum in enumerate(message.enum_type):
        _walk_enum(enum, (*path, _NESTED_ENUM, i), full, names)


def _walk_enum(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str, names: dict[tuple[int, ...], str]
) -> None:
    full = f"{scope}.{enum.name}"
    names[path] = full
    for i, value in enumerate(enum.value):
        names[(*path, _ENUM_VALUE, i)] = f"{full}.{value.name}"


@lru_cache(maxsize=1)
def comments() -> dict[str, str]:
    data = resources.files("bmc").joinpath("docs.binpb").read_bytes()
    found: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        names: dict[tuple[int, ...], str] = {}
        for i, message in enumerate(file.message_type):
            _walk_message(message, (_MESSAGE, i), file.package, names)
        for i, enum in enumerate(file.enum_type):
            _walk_enum(enum, (_ENUM, i), file.package, names)
        for i, service in enumerate(file.service):
            names[(_SERVICE, i)] = f"{file.package}.{service.name}"
            for j, method in enumerate(service.method):
                names[(_SERVICE, i, _METHOD, j)] = f"{file.package}.{service.name}.{method.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments:
                found[name] = _clean(location.leading_comments)
    return found


def comment(full_name: str) -> str:
    return comments().get(full_name, "")
