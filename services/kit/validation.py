"""Request validation from the contracts' protovalidate rules, before any handler runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import protovalidate
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
    """INVALID_ARGUMENT with `BadRequest` field violations for any rule broken.
    Streamed requests are checked message by message as they arrive."""

    def __init__(self, validator: RequestValidator | None = None) -> None:
        super().__init__()
        self._validator = validator or RequestValidator()

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure and method.descriptor is not None

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Message):
            try:
                self._validator.check(request)
            except InvalidArgument as error:
                await abort(context, to_status(error))
            yield request
            return
        yield self._checked_stream(request, context)

    async def _checked_stream(self, requests: AsyncIterator[Message], context: Context) -> AsyncIterator[Message]:
        index = 0
        async for message in requests:
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
