"""The caller's deadline, carried through the work an RPC does: every
downstream wait (another service, the cache) takes at most what is left of
it, so that a slow dependency is abandoned in time for a fallback rather
than outliving the call it serves."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from services.kit.interception import Context, MethodInfo, ScopedInterceptor

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
FLOOR = 0.05  # a wait is never given less than this: a call already late still gets an answer or an error


def remaining() -> float | None:
    """Seconds left of the current RPC's deadline, or None outside one (or without one)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def bounded(seconds: float, share: float = 1.0) -> float:
    """`seconds`, or `share` of what is left of the caller's deadline if that is less."""
    left = remaining()
    return seconds if left is None else max(FLOOR, min(seconds, left * share))


class DeadlineInterceptor(ScopedInterceptor):
    """Records the caller's deadline for the RPC's downstream waits."""

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        left = context.time_remaining()
        token = _deadline.set(None if left is None else time.monotonic() + left)
        try:
            yield request
        finally:
            _deadline.reset(token)
