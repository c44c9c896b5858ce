"""Where uploaded files are decoded and parsed: worker processes with a
memory ceiling, a time budget per task, killed when the caller's deadline
passes or the caller goes away, and dying with the service.

A hostile upload (an image that decodes to gigapixels, a PDF whose content
stream inflates to gigabytes, XML that takes minutes to walk) then costs
one worker, for at most its budget, and never the service's event loop:
the worker is killed (pebble terminates it and starts another), the caller
gets RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED naming the limit, and health
checks keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import multiprocessing
import resource
import signal
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pebble

from services.kit.errors import ResourceExhausted

P = ParamSpec("P")
T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: the kernel kills this process when the thread that started it
    (the pool's manager, in the service process) ends, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _start_worker(memory_bytes: int, setup: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    die_with_parent()
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if setup is not None:
        setup(*args)


class TaskBudgetExceeded(ResourceExhausted):
    """A task ran past its time budget or memory ceiling and was stopped."""


def _ready() -> None:
    """A task that only proves a worker has started."""


class IsolatedPool:
    """A pool of worker processes for untrusted input."""

    def __init__(
        self,
        workers: int,
        memory_bytes: int,
        setup: Callable[..., None] | None = None,
        setup_args: tuple[Any, ...] = (),
        name: str = "worker",
    ) -> None:
        self.name = name
        self.workers = workers
        self.memory_bytes = memory_bytes
        self._pool = pebble.ProcessPool(
            max_workers=workers,
            initializer=_start_worker,
            initargs=(memory_bytes, setup, setup_args),
            context=multiprocessing.get_context("spawn"),
        )

    async def start(self, seconds: float = 120.0) -> None:
        """Starts the workers now (each runs its setup, such as loading a
        model) rather than on the first upload."""
        await asyncio.gather(*(self.run(seconds, _ready) for _ in range(self.workers)))

    async def run(self, budget: float, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`function(*args)` in a worker, within `budget` seconds. Cancelling
        the awaiting task (the caller cancelled, or its deadline passed)
        kills the worker running it."""
        future = self._pool.schedule(function, args=args, kwargs=kwargs, timeout=budget)
        try:
            return await asyncio.wrap_future(future)
        except concurrent.futures.TimeoutError as exc:
            raise TaskBudgetExceeded(
                f"the file took more than {budget:g} s to read and was abandoned",
                reason="PROCESSING_TIME_EXCEEDED",
                metadata={"budget_seconds": f"{budget:g}"},
            ) from exc
        except (MemoryError, pebble.ProcessExpired) as exc:
            raise TaskBudgetExceeded(
                f"reading the file needed more than the {self.memory_bytes // 2**20} MiB a reader may use",
                reason="PROCESSING_MEMORY_EXCEEDED",
                metadata={"memory_mib": str(self.memory_bytes // 2**20)},
            ) from exc

    def close(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=5)
