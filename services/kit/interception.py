"""The shape every kit interceptor shares: a scope around one RPC.

gRPC's aio interceptor API hands over a method handler; wrapping its four
kinds (unary/stream in and out) correctly is fiddly, so it is done once here.
A kit interceptor only writes `scope()`: an async context manager entered
before the handler runs and left when it has finished (for streamed
responses, when the stream ends). It may replace the request (or request
iterator) by yielding another one.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from bmc.auth.v1 import policy_pb2
from services.kit.errors import abort, internal_status

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context = grpc.aio.ServicerContext[Any, Any]

# Services every server exposes that carry no business data and need no token.
INFRASTRUCTURE_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def infrastructure_method(full_method: str) -> bool:
    """Whether `/service/Method` is one of the infrastructure services'."""
    return full_method.lstrip("/").partition("/")[0] in INFRASTRUCTURE_SERVICES


@dataclass(frozen=True)
class MethodInfo:
    """What the kit knows of one RPC, read from its descriptor once."""

    full_method: str
    service: str
    name: str
    descriptor: MethodDescriptor | None
    policy: policy_pb2.Policy | None

    @property
    def infrastructure(self) -> bool:
        return self.service in INFRASTRUCTURE_SERVICES

    @classmethod
    def of(cls, full_method: str) -> MethodInfo:
        service, _, name = full_method.lstrip("/").partition("/")
        descriptor: MethodDescriptor | None = None
        policy: policy_pb2.Policy | None = None
        if service not in INFRASTRUCTURE_SERVICES:
            try:
                descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name.get(name)
            except KeyError:
                descriptor = None
            if descriptor is not None and descriptor.GetOptions().HasExtension(policy_pb2.policy):
                policy = descriptor.GetOptions().Extensions[policy_pb2.policy]
        return cls(full_method, service, name, descriptor, policy)


_methods: dict[str, MethodInfo] = {}


def method_info(full_method: str) -> MethodInfo:
    info = _methods.get(full_method)
    if info is None:
        info = _methods[full_method] = MethodInfo.of(full_method)
    return info


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _contain(exc: Exception, method: MethodInfo, context: Context) -> None:
    """A failure of an interceptor itself: INTERNAL with an incident id, never
    the exception's text (which gRPC would otherwise send as UNKNOWN)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    incident = uuid.uuid4().hex[:12]
    structlog.get_logger("bmc.errors").error(
        "interceptor failed", method=method.full_method, incident=incident, exc_info=exc
    )
    await abort(context, internal_status(incident))


class ScopedInterceptor(grpc.aio.ServerInterceptor):
    """Base class: subclasses implement `scope`."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    def applies_to(self, method: MethodInfo) -> bool:
        """Whether the interceptor acts on this method at all."""
        return True

    def scope(self, method: MethodInfo, request: Any, context: Context) -> AbstractAsyncContextManager[Any]:
        """Entered around the handler; yields the request the handler receives."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return handler
        # gRPC looks interceptors up on every call; the wrapped handler of a
        # method is built once and reused while the inner handler is the same.
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        method = method_info(handler_call_details.method)
        wrapped = self._wrap(handler, method) if self.applies_to(method) else handler
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: MethodInfo) -> grpc.RpcMethodHandler[Any, Any]:
        scope = self.scope
        deserializer, serializer = handler.request_deserializer, handler.response_serializer

        if handler.unary_unary or handler.stream_unary:
            inner_unary: Callable[..., Any] = handler.unary_unary or handler.stream_unary  # type: ignore[assignment]

            async def unary_response(request: Any, context: Context) -> Any:
                try:
                    async with scope(method, request, context) as actual:
                        return await _maybe_await(inner_unary(actual, context))
                except Exception as exc:
                    await _contain(exc, method, context)

            factory = (
                grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            )
            return factory(unary_response, request_deserializer=deserializer, response_serializer=serializer)

        inner_stream: Callable[..., Any] = handler.unary_stream or handler.stream_stream  # type: ignore[assignment]

        async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async with scope(method, request, context) as actual:
                    produced = inner_stream(actual, context)
                    if inspect.isasyncgen(produced) or hasattr(produced, "__aiter__"):
                        async for item in produced:
                            yield item
                    else:
                        for item in await _maybe_await(produced):
                            yield item
            except Exception as exc:
                await _contain(exc, method, context)

        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
        return factory(stream_response, request_deserializer=deserializer, response_serializer=serializer)


def metadata_value(context: Context, key: str) -> str | None:
    """The first value of an incoming metadata key, as text."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
