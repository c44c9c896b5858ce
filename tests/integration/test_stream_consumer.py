"""The kit's stream consumer against a real Redis: it recreates a consumer
group Redis lost, and its health (a name of its own in grpc.health.v1)
says whether it makes progress."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from services.kit.envelopes import Event
from services.kit.events import StreamConsumer
from services.kit.redis_connection import open_redis
from tests.conftest import Platform

T = TypeVar("T")


def _event(n: int) -> Event:
    return Event(str(uuid.uuid4()), "Tested", f"s{n}", 1, n, "", "", {"n": n})


def test_a_lost_group_is_recreated_and_health_follows_progress(platform: Platform) -> None:
    assert platform.cluster.infrastructure is not None
    url = platform.cluster.infrastructure.redis_url
    stream = f"{platform.settings.redis_prefix}test-{uuid.uuid4().hex[:8]}.events"

    async def scenario() -> tuple[list[int], list[tuple[str, bool]], str]:
        client = open_redis(url)  # as the services have it: no read waits for ever
        handled: list[int] = []
        health: list[tuple[str, bool]] = []
        failing = asyncio.Event()

        async def handle(events: Sequence[Event]) -> None:
            if failing.is_set():
                raise RuntimeError("the handler cannot apply them now")
            handled.extend(int(e.data["n"]) for e in events)

        async def set_health(name: str, serving: bool) -> None:
            health.append((name, serving))

        consumer = StreamConsumer(client, stream, "tests", "c1", handle, block_ms=100, health=set_health)
        await consumer.start()
        try:
            for n in range(3):
                await client.xadd(stream, _event(n).fields())
            await _until(lambda: len(handled) == 3)
            await client.xgroup_destroy(stream, "tests")  # as when Redis restarts without the group
            await client.xadd(stream, _event(3).fields())
            await _until(lambda: 3 in handled)
            failing.set()
            await client.xadd(stream, _event(4).fields())
            await _until(lambda: health[-1][1] is False)
            reason = consumer.problem or ""
            failing.clear()
            await _until(lambda: 4 in handled and health[-1][1] is True)
        finally:
            await consumer.stop()
            await client.delete(stream)
            await client.aclose()
        return handled, health, reason

    handled, health, reason = asyncio.run(bounded(scenario(), 90))
    assert handled[:3] == [0, 1, 2]
    assert set(handled) == {0, 1, 2, 3, 4}, "the recreated group delivers again; handlers are idempotent"
    assert [serving for _, serving in health] == [True, False, True]
    assert {name for name, _ in health} == {f"bmc.consumer.tests.{stream}"}
    assert "cannot apply them now" in reason


async def _until(condition: object, seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def bounded(scenario: Coroutine[Any, Any, T], seconds: float) -> T:
    """The scenario's result; on a hang, the stacks of every task (where it
    hangs) and a failure, never a result the cancellation let through."""
    task = asyncio.ensure_future(scenario)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack()
        task.cancel()
        raise AssertionError(f"the scenario hung for {seconds} s (task stacks above)")
    return task.result()
