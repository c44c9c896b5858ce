"""Group commit and the circuit breaker: a faulty batch handler fails its
batch and nothing else; a half-open breaker lets exactly one trial through."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.kit.batching import MicroBatcher
from services.kit.breaker import CircuitBreaker
from services.kit.errors import Unavailable


def test_a_handler_answering_the_wrong_count_fails_its_batch_and_the_batcher_serves_on() -> None:
    faulty = True

    async def handler(items: Sequence[int]) -> list[int | BaseException]:
        return [item * 2 for item in items][: len(items) - 1 if faulty else None]

    async def scenario() -> tuple[list[object], int]:
        nonlocal faulty
        batcher: MicroBatcher[int, int] = MicroBatcher(handler)
        first = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True), timeout=5
        )
        faulty = False
        later = await asyncio.wait_for(batcher.submit(21), timeout=5)
        await batcher.close()
        return list(first), later

    first, later = asyncio.run(scenario())
    assert all(isinstance(result, RuntimeError) for result in first), first
    assert later == 42


def test_a_half_open_breaker_lets_exactly_one_trial_through() -> None:
    calls = 0

    async def down() -> None:
        raise ConnectionError("down")

    async def slow_success() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "ok"

    async def scenario() -> tuple[list[object], str, str]:
        breaker = CircuitBreaker("product", threshold=2, reset_seconds=0.05)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.call(down, ConnectionError)
        opened = breaker.state
        await asyncio.sleep(0.06)
        outcomes = await asyncio.gather(
            *(breaker.call(slow_success, ConnectionError) for _ in range(5)), return_exceptions=True
        )
        return list(outcomes), opened, breaker.state

    outcomes, opened, after = asyncio.run(scenario())
    assert opened == "open"
    assert calls == 1, "one trial while half-open"
    assert outcomes.count("ok") == 1
    assert sum(isinstance(o, Unavailable) for o in outcomes) == 4
    assert after == "closed"
