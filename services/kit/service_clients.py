"""Calls from one service to another: the callee's stub on a shared channel,
a per-call deadline, the caller's trace context and a service token, and a
circuit breaker so that a sick dependency fails fast."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.kit.breaker import CircuitBreaker
from services.kit.clients import aio_channel, bearer, keyed
from services.kit.deadlines import bounded
from services.kit.errors import Unavailable, from_remote
from services.kit.settings import Settings
from services.kit.telemetry import outgoing_metadata
from services.kit.tokens import mint_token

_T = TypeVar("_T")
# Failures that say the dependency, not the request, is at fault.
_DEPENDENCY_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


class _DependencyFailure(Exception):
    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error


class ServiceClient:
    """A stub of another service with deadline, breaker and identity."""

    def __init__(
        self, settings: Settings, caller: str, callee: str, stub_type: type[Any], deadline: float = 2.0
    ) -> None:
        self._settings, self._caller, self._callee = settings, caller, callee
        self._channel = aio_channel(settings, callee, client=caller)
        self.stub = stub_type(self._channel)
        self._deadline = deadline
        # Half-open after a second, one trial at a time: a dependency that comes back is used again within ~1 s.
        self._breaker = CircuitBreaker(f"{callee} service", reset_seconds=1.0, dependency=callee)
        self._token = ""
        self._token_expires = 0.0

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        # In AWS the token comes from the issuer (client credentials); here
        # the dev key signs a short-lived service token.
        if time.time() > self._token_expires - 60:
            self._token = mint_token(
                self._settings, subject=f"service:{self._caller}", roles=["service"], ttl_seconds=900
            )
            self._token_expires = time.time() + 900
        return bearer(self._token, outgoing_metadata())

    async def call(self, method: Callable[..., Awaitable[_T]], request: Any) -> _T:
        async def attempt() -> _T:
            try:
                # What is left of the caller's deadline, if less: the callee gets no more time than the caller has.
                # The half-open trial waits (within it) for the channel to reconnect, rather than failing
                # because it came a moment before the reconnection and holding the breaker open a second more.
                return await method(
                    request,
                    metadata=self._metadata() + keyed(request),
                    timeout=bounded(self._deadline),
                    wait_for_ready=self._breaker.state == "half-open",
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _DEPENDENCY_FAILURES:
                    raise _DependencyFailure(exc) from exc
                remote = from_remote(exc)  # NOT_FOUND, FAILED_PRECONDITION...: the caller's to handle
                if remote is not None:
                    raise remote from exc
                raise

        try:
            return await self._breaker.call(attempt, _DependencyFailure)
        except _DependencyFailure as exc:
            raise Unavailable(
                f"the {self._callee} service did not answer ({exc.error.code().name}); nothing was registered",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": self._callee},
            ) from exc

    async def close(self) -> None:
        await self._channel.close()
