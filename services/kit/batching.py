"""Group commit: concurrent single requests gathered into one batch.

Callers `await submit(item)`; a worker takes whatever has queued (up to
`max_size`, waiting at most `max_wait` seconds after the first item) and
hands the list to `handler`, which returns one result per item. A result
that is an exception is raised to its caller only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

from services.kit.background import cancel, detached
from services.kit.telemetry import in_batch

_I = TypeVar("_I")
_R = TypeVar("_R")


class MicroBatcher(Generic[_I, _R]):
    def __init__(
        self,
        handler: Callable[[Sequence[_I]], Awaitable[Sequence[_R | BaseException]]],
        max_size: int = 200,
        max_wait: float = 0.002,
    ) -> None:
        self._handler, self._max_size, self._max_wait = handler, max_size, max_wait
        self._queue: asyncio.Queue[tuple[_I, asyncio.Future[_R], trace.Span]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, item: _I) -> _R:
        if self._task is None:
            self._task = detached(self._run(), "micro-batcher")  # it serves every later caller too
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future, trace.get_current_span()))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._max_wait
            while len(batch) < self._max_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)))
                except TimeoutError:
                    break
            self.batches += 1
            try:
                # Alone, the batch continues its request's trace; with others, it is linked to each.
                with in_batch("group commit", [span for _, _, span in batch]):
                    results = list(await self._handler([item for item, _, _ in batch]))
                if len(results) != len(batch):  # a handler bug must not take the worker (and every later caller) down
                    raise RuntimeError(f"the batch handler answered {len(results)} results for {len(batch)} items")
            except Exception as exc:  # the whole batch failed: every caller learns why
                results = [exc] * len(batch)
            for (_, future, _), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        await cancel(self._task)
