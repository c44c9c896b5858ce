"""Tasks a service runs beside its RPCs (imports, settlements), kept so that
they are not garbage-collected mid-way and are cancelled on shutdown; and
how to cancel one."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

from opentelemetry import context as otel_context

_T = TypeVar("_T")


def detached(work: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
    """A task that outlives the request that starts it, in no request's
    trace: it runs in a copy of the current context with OpenTelemetry's part
    emptied. (A worker started by a request would otherwise hang every
    statement it ever runs from that one request's span.)"""
    context = contextvars.copy_context()
    context.run(otel_context.attach, otel_context.Context())
    return asyncio.create_task(work, name=name, context=context)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancels a background task and waits until it has ended. A library
    may swallow a cancellation (a read timing out at that very moment, then
    retried), so it is asked again every second; a cancellation of the
    caller itself meanwhile propagates."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: it ended on its own, and said why in its log


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = detached(work, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def names(self) -> set[str]:
        """The names of the tasks still running."""
        return {task.get_name() for task in self._tasks}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
