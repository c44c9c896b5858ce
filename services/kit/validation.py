"""What every request goes through before its handler: output-only fields
cleared, then the contracts' protovalidate rules checked.

Output-only fields (`google.api.field_behavior = OUTPUT_ONLY`, and the
IDENTIFIER of a resource sent to any method but an Update) are the
server's to set (AIP-203): a client's values for them are dropped, at any
depth, before validation, so none can reach storage or an event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import protovalidate
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.kit.errors import FieldViolation, InvalidArgument, abort, to_status
from services.kit.interception import Context, MethodInfo, ScopedInterceptor


def field_path(violation: Any) -> str:
    """`lines[2].product_code` from a protovalidate field path."""
    parts: list[str] = []
    for element in violation.proto.field.elements if violation.proto.has_field("field") else ():
        text = element.field_name
        subscript = element.subscript
        if subscript is not None:
            text += f"[{subscript.value}]" if subscript.field == "index" else f"[{subscript.value!r}]"
        parts.append(text)
    return ".".join(parts)


_OUTPUT = field_behavior_pb2.OUTPUT_ONLY
_IDENTIFIER = field_behavior_pb2.IDENTIFIER
_FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior


def _behaviours(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[_FIELD_BEHAVIOR])


class OutputOnlyFields:
    """Clears server-set fields from requests. A plan per message type
    (which fields to clear, which to descend into) is worked out once, so a
    type with nothing to clear costs one dictionary lookup."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, bool], tuple[list[str], list[tuple[str, str]]] | None] = {}

    def _plan(self, message: Any, identifiers: bool) -> tuple[list[str], list[tuple[str, str]]] | None:
        """(fields to clear, (field, "map" | "repeated" | "single") to descend into), or None for nothing."""
        key = (message.full_name, identifiers)
        if key in self._plans:
            return self._plans[key]
        self._plans[key] = None  # recursive types: no plan while this one is worked out
        clear: list[str] = []
        descend: list[tuple[str, str]] = []
        cleared = {_OUTPUT, _IDENTIFIER} if identifiers else {_OUTPUT}
        for field in message.fields:
            if _behaviours(field) & cleared:
                clear.append(field.name)
            elif field.message_type is not None:
                target: Descriptor | None = field.message_type
                kind = "repeated" if field.is_repeated else "single"
                if target is not None and target.GetOptions().map_entry:
                    target, kind = target.fields_by_name["value"].message_type, "map"
                if target is not None and self._plan(target, identifiers) is not None:
                    descend.append((field.name, kind))
        plan = (clear, descend) if clear or descend else None
        self._plans[key] = plan
        return plan

    def clear(self, message: Message, identifiers: bool = False) -> None:
        """Clears, in place, every output-only field of `message` and of the
        messages inside it; `identifiers` clears IDENTIFIER fields too."""
        plan = self._plan(message.DESCRIPTOR, identifiers)
        if plan is None:
            return
        clear, descend = plan
        for name in clear:
            message.ClearField(name)
        for name, kind in descend:
            value = getattr(message, name)
            if kind == "map":
                for item in value.values():
                    self.clear(item, identifiers)
            elif kind == "repeated":
                for item in value:
                    self.clear(item, identifiers)
            elif message.HasField(name):
                self.clear(value, identifiers)


class RequestValidator:
    """Checks messages against their protovalidate rules."""

    def __init__(self) -> None:
        self._validator = protovalidate.Validator()

    def violations(self, message: Message) -> list[FieldViolation]:
        return [
            FieldViolation(field=field_path(v), description=v.proto.message, reason=v.proto.rule_id)
            for v in self._validator.collect_violations(message)
        ]

    def check(self, message: Message) -> None:
        """Raises `InvalidArgument` naming every violated rule."""
        found = self.violations(message)
        if found:
            summary = "; ".join(f"{v.field or '(message)'}: {v.description}" for v in found[:5])
            raise InvalidArgument(
                f"invalid {message.DESCRIPTOR.name}: {summary}", reason="REQUEST_VALIDATION", violations=found
            )


class ValidationInterceptor(ScopedInterceptor):
    """Output-only fields cleared, then INVALID_ARGUMENT with `BadRequest`
    field violations for any rule broken. Streamed requests are handled
    message by message as they arrive."""

    def __init__(self, validator: RequestValidator | None = None) -> None:
        super().__init__()
        self._validator = validator or RequestValidator()
        self._output_only = OutputOnlyFields()

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure and method.descriptor is not None

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        identifiers = not method.name.startswith("Update")
        if isinstance(request, Message):
            self._output_only.clear(request, identifiers)
            try:
                self._validator.check(request)
            except InvalidArgument as error:
                await abort(context, to_status(error))
            yield request
            return
        yield self._checked_stream(request, context, identifiers)

    async def _checked_stream(
        self, requests: AsyncIterator[Message], context: Context, identifiers: bool
    ) -> AsyncIterator[Message]:
        index = 0
        async for message in requests:
            self._output_only.clear(message, identifiers)
            try:
                self._validator.check(message)
            except InvalidArgument as error:
                error.violations = [
                    FieldViolation(f"[{index}].{v.field}".rstrip("."), v.description, v.reason)
                    for v in error.violations
                ]
                await abort(context, to_status(error))
            index += 1
            yield message
