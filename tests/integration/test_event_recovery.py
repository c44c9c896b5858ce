"""The kit's event recovery against real PostgreSQL and Redis: a poison
event is set aside as a dead letter (and re-driven once fixed) without
holding back the rest; a consumer catches up from the producer's log what
the stream lost, in the middle or at the tail, applying each event once."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Sequence

import pytest

from bmc.common.v1 import events_pb2
from bmc.invoice.v1 import invoice_service_pb2
from services.kit.catchup import Catchup
from services.kit.dead_letters import Applier, DeadLetterDesk, DeadLetters
from services.kit.envelopes import Event
from services.kit.errors import FailedPrecondition
from services.kit.events import OUTBOX_COLUMNS, OutboxRelay, StreamConsumer
from services.kit.redis_connection import open_redis
from tests.conftest import Platform
from tests.integration.database import fresh_database


def _event(position: int) -> Event:
    """An event recorded now (a catch-up leaves it to the stream for its grace)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    return Event(str(uuid.uuid4()), "Tested", f"s{position}", 1, position, "acme", "", {"n": position}, now)


class Handler:
    """Applies events idempotently by id (as the services' consumers do),
    counting every application; fails as told."""

    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()
        self.poison: set[str] = set()
        self.down = False

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.down:
            raise ConnectionRefusedError("the database is unreachable")
        bad = [e.event_id for e in events if e.event_id in self.poison]
        if bad:
            raise ValueError(f"cannot apply {bad[0]}")
        for event in events:
            self.applied[event.event_id] += 1


def test_a_poison_event_is_set_aside_the_rest_applied_and_it_is_redriven_once_fixed(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("one backend is enough for the kit's mechanics")
    handler = Handler()
    events = [_event(n) for n in range(1, 6)]
    poison = events[2]
    handler.poison.add(poison.event_id)

    async def scenario() -> tuple[list[int], list[int], events_pb2.DeadLetter, str, events_pb2.DeadLetter]:
        async with fresh_database(platform.cluster, "commission") as database:
            letters = DeadLetters(database.pool, "commission", "commissionDeadLetters")
            applier = Applier(handler, letters, "invoice", attempts=2, after_seconds=0)
            desk = DeadLetterDesk(letters, invoice_service_pb2.ListDeadLettersResponse, {"invoice": applier})
            first = await applier.apply(events)
            handler.down = True  # an outage fails every event: none of them is poison
            for _ in range(3):
                assert (await applier.apply(events[3:])).done == []
            handler.down = False
            second = await applier.apply([poison])
            listed = await desk.list(invoice_service_pb2.ListDeadLettersRequest())
            (letter,) = listed.dead_letters
            with pytest.raises(FailedPrecondition) as still:
                await desk.redrive(letter.name)
            handler.poison.clear()  # the operator fixed the cause
            redriven = await desk.redrive(letter.name)
            return (
                [e.position for e in first.done],
                [e.position for e in second.done],
                letter,
                still.value.reason,
                redriven,
            )

    first, second, letter, refused, redriven = asyncio.run(scenario())
    assert first == [1, 2, 4, 5], "the others of the read are applied"
    assert second == [3], "set aside after its second failure: done with"
    assert letter.name.startswith("commissionDeadLetters/")
    assert (letter.source, letter.event.event_id, letter.event.position) == ("invoice", poison.event_id, 3)
    assert letter.event.data["n"] == 3
    assert letter.state == events_pb2.DeadLetter.STATE_PENDING
    assert "cannot apply" in letter.error
    assert refused == "REDRIVE_FAILED"
    assert redriven.state == events_pb2.DeadLetter.STATE_REDRIVEN
    assert redriven.attempts == letter.attempts + 2
    assert handler.applied[poison.event_id] == 1
    assert set(handler.applied.values()) == {1}, "no event applied twice"


def test_a_consumer_catches_up_what_the_stream_lost_in_the_middle_and_at_the_tail(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("one backend is enough for the kit's mechanics")
    assert platform.cluster.infrastructure is not None
    url = platform.cluster.infrastructure.redis_url
    stream = f"{platform.settings.redis_prefix}test-{uuid.uuid4().hex[:8]}.events"
    log: list[Event] = []  # the producer's durable log
    handler = Handler()

    async def feed(after: int, limit: int) -> list[Event]:
        return [e for e in log if e.position > after][:limit]

    async def scenario() -> tuple[int, int, int, str]:
        client = open_redis(url)
        async with fresh_database(platform.cluster, "commission") as database:
            applier = Applier(handler)
            catchup = Catchup(
                database.pool, "tests", "producer", feed, applier, grace=0.3, probe=0.5,
                processed_retention=dt.timedelta(days=28),
            )  # fmt: skip
            async with database.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO processed_events VALUES ('x', 'long ago', now() - interval '40 days'), "
                    "('x', 'lately', now() - interval '20 days')"
                )
            consumer = StreamConsumer(client, stream, "tests", "c1", applier, block_ms=100, catchup=catchup)
            await catchup.start()
            await consumer.start()
            try:
                for event in (_event(n) for n in range(1, 11)):
                    log.append(event)
                    if event.position not in (4, 5):  # lost in the middle
                        await client.xadd(stream, event.fields())  # type: ignore[arg-type]
                await _until(lambda: catchup.mark == 10)
                middle = catchup.caught_up
                log.extend(_event(n) for n in (11, 12))  # lost at the tail: nothing after them arrives
                await _until(lambda: catchup.mark == 12)
                await client.xadd(stream, log[0].fields())  # type: ignore[arg-type]  # an old redelivery
                await asyncio.sleep(0.5)
                async with database.pool.acquire() as conn:
                    stored = await conn.fetchval("SELECT position FROM consumer_marks WHERE consumer = 'tests'")
                    remembered = await conn.fetchval("SELECT string_agg(event_id, ',') FROM processed_events")
            finally:
                await consumer.stop()
                await catchup.stop()
                await client.delete(stream)
                await client.aclose()
            return middle, catchup.caught_up, stored, remembered

    middle, total, stored, remembered = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert remembered == "lately", "ids of events applied past the retention are forgotten"
    assert (middle, total) == (2, 4), "the catch-up applied exactly the lost events"
    assert stored == 12
    assert sorted(handler.applied) == sorted(e.event_id for e in log)
    assert set(handler.applied.values()) == {1}, "each event applied once, the old redelivery skipped"


async def _until(condition: object, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_streams_are_trimmed_and_only_relayed_old_outbox_rows_pruned(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("one backend is enough for the kit's mechanics")
    assert platform.cluster.infrastructure is not None
    url = platform.cluster.infrastructure.redis_url
    stream = f"{platform.settings.redis_prefix}test-{uuid.uuid4().hex[:8]}.events"
    recent = dt.datetime.now(dt.UTC)
    old = recent - dt.timedelta(days=30)  # past the 7-day retention, whatever the day

    async def scenario() -> tuple[int, int, list[int]]:
        client = open_redis(url)
        async with fresh_database(platform.cluster, "commission") as database:
            relay = OutboxRelay(
                database.pool, client, stream, "test.events", batch=500, max_length=1000, retention=dt.timedelta(days=7)
            )
            rows = [
                (n, uuid.uuid4(), f"s{n}", 1, "Tested", "acme", "", "{}", old if n <= 2900 else recent)
                for n in range(1, 3001)
            ]
            async with database.pool.acquire() as conn:
                await conn.copy_records_to_table("outbox", records=rows, columns=OUTBOX_COLUMNS)
                await conn.execute("INSERT INTO relay_checkpoints VALUES ('test.events', 0)")
                for _ in range(5):  # 2,500 of the 3,000 relayed
                    await relay.publish_once(conn)
                pruned = await relay.prune(conn)
                left = [r["position"] for r in await conn.fetch("SELECT position FROM outbox ORDER BY position")]
            length = await client.xlen(stream)
            await client.delete(stream)
            await client.aclose()
        return length, pruned, left

    length, pruned, left = asyncio.run(scenario())
    assert 1000 <= length < 1500, "trimmed to about its bound (whole macro nodes at a time)"
    assert pruned == 2500, "relayed and past the retention"
    assert left == list(range(2501, 3001)), "not yet relayed, or recent: kept"
