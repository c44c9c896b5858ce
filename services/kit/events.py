"""Events between services over Redis Streams: the outbox relay that
publishes a service's committed events in order, at least once, and the
consumer-group runner that hands them to idempotent handlers.

Delivery is at least once end to end: the relay may publish an event again
after a crash (it checkpoints after publishing), and a consumer that dies
before acknowledging gets the message again (pending entries are reclaimed
by any member of the group). Handlers therefore record the ids of the events
they have applied, in the same transaction as their effects (`first_time`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

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


def stream_name(prefix: str, service: str) -> str:
    return f"{prefix}{service}.events"


@dataclass(frozen=True)
class Event:
    """An event as it travels on a stream."""

    event_id: str
    type: str
    stream_id: str
    version: int
    position: int
    tenant: str
    trace_id: str
    data: Mapping[str, Any]
    time: str = ""  # when the event was recorded, RFC 3339

    @property
    def occurred(self) -> dt.datetime:
        """The record time (now, for an event that does not carry one)."""
        return dt.datetime.fromisoformat(self.time) if self.time else dt.datetime.now(dt.UTC)

    def fields(self) -> dict[str, bytes]:
        """The stream entry: the event type (for filtering with XRANGE by eye)
        and one JSON envelope with everything, the payload included."""
        return {"type": self.type.encode(), "event": envelope(self._header(), orjson.dumps(self.data))}

    def _header(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "stream_id": self.stream_id,
            "version": self.version,
            "position": self.position,
            "tenant": self.tenant,
            "trace_id": self.trace_id,
            "time": self.time,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> Event:
        e = orjson.loads(fields[b"event"])
        return cls(
            event_id=e["event_id"],
            type=e["type"],
            stream_id=e["stream_id"],
            version=int(e["version"]),
            position=int(e["position"]),
            tenant=e.get("tenant") or "",
            trace_id=e.get("trace_id") or "",
            data=e["data"],
            time=e.get("time") or "",
        )


def envelope(header: Mapping[str, Any], data_json: bytes) -> bytes:
    """`header` as JSON with `"data": <data_json>` spliced in unparsed."""
    return orjson.dumps(header)[:-1] + b',"data":' + data_json + b"}"


class OutboxRelay:
    """Publishes rows of an ordered, gapless event table to a Redis stream.

    `query` selects events with `position > $1 ORDER BY position LIMIT $2`
    and returns the columns of `Event` (`time` as a timestamptz)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        stream: str,
        name: str,
        query: str = OUTBOX_RELAY_QUERY,
        batch: int = 500,
    ) -> None:
        self._pool, self._redis, self._stream, self._name = pool, redis, stream, name
        self._query, self._batch = query, batch
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("INSERT INTO relay_checkpoints VALUES ($1, 0) ON CONFLICT DO NOTHING", self._name)
        self._task = asyncio.create_task(self._run(), name=f"relay:{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish_once(self) -> int:
        """Publishes the next batch; the number of events published."""
        async with self._pool.acquire() as conn:
            position = await conn.fetchval("SELECT position FROM relay_checkpoints WHERE name = $1", self._name)
            rows = await conn.fetch(self._query, position, self._batch)
        if not rows:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                # orjson writes `time` (a datetime) as RFC 3339
                header = {k: row[k] for k in Event.__dataclass_fields__ if k != "data"}
                data = row["data"]  # JSON text passes through without a parse
                payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
                pipe.xadd(self._stream, {"type": row["type"], "event": envelope(header, payload)})
            await pipe.execute()
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE relay_checkpoints SET position = $2 WHERE name = $1", self._name, rows[-1]["position"]
            )
        self.published += len(rows)
        return len(rows)

    async def _run(self) -> None:
        """Publishes while this process holds the relay's leadership: with
        several workers of a service, one relays and the others stand by."""
        lock = int.from_bytes(hashlib.sha256(f"relay:{self._name}".encode()).digest()[:8], "big", signed=True)
        while True:
            try:
                async with self._pool.acquire() as leader:
                    if not await leader.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                        await asyncio.sleep(2.0)
                        continue
                    try:
                        await self._publish_while_leader()
                    finally:
                        await leader.execute("SELECT pg_advisory_unlock($1)", lock)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, asyncpg.PostgresError) as exc:
                log.warning("relay paused", relay=self._name, error=str(exc))
                await asyncio.sleep(1.0)

    async def _publish_while_leader(self) -> None:
        idle = 0.05
        while True:
            count = await self.publish_once()
            idle = 0.05 if count else min(idle * 2, 0.5)
            if count < self._batch:
                await asyncio.sleep(idle)


Handler = Callable[[Event], Awaitable[None]]
# Sets a health status: (name, serving).
Health = Callable[[str, bool], Awaitable[None]]
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]


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


class StreamConsumer:
    """One member of a consumer group: reads new messages, reclaims those a
    crashed member left pending, and acknowledges them once the handler ran.

    The handler gets the events of one read together (up to `count`), so it
    can apply them in one transaction; if it raises, none is acknowledged and
    the whole read is delivered again (handlers are idempotent)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        handler: BatchHandler,
        *,
        claim_idle_ms: int = 30_000,
        block_ms: int = 1_000,
        count: int = 100,
        health: Health | None = None,
    ) -> None:
        self._redis, self._stream, self._group, self._consumer = redis, stream, group, consumer
        self._handler = handler
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _handle(self, messages: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> int:
        live = [(message_id, fields) for message_id, fields in messages if fields]  # trimmed entries come back empty
        if not live:
            return 0
        await self._handler([Event.from_fields(fields) for _, fields in live])
        await self._redis.xack(self._stream, self._group, *(message_id for message_id, _ in live))
        self.handled += len(live)
        return len(live)

    async def poll_once(self) -> int:
        """Retries its own pending messages (a read its handler failed),
        reclaims stale ones of crashed members, then reads new ones; the number handled."""
        own: Any = await self._redis.xreadgroup(self._group, self._consumer, {self._stream: "0"}, count=self._count)
        for _stream, messages in own or []:
            await self._handle(messages)
        reclaimed: Any = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._count,
        )
        handled = await self._handle(reclaimed[1])
        batches: Any = await self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: ">"}, count=self._count, block=self._block_ms
        )
        for _stream, messages in batches or []:
            handled += await self._handle(messages)
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
                    continue
                await self._report(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)
            except Exception as exc:  # a failing handler leaves the message pending for a retry
                await self._report(f"{type(exc).__name__}: {exc}")
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
