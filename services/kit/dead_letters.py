"""Poison events: an event a consumer fails to apply again and again is set
aside as a dead letter, so that it stops holding back the events read with
it, and waits there for an operator (`bmc events dead-letters`,
`bmc events redrive`).

A read that fails is applied again one event at a time, which finds the
event at fault; the others are applied and acknowledged. An event is set
aside only after `attempts` failures spread over at least `after_seconds`,
and only for failures of its own: while PostgreSQL, Redis or another service
is unreachable every event fails, and none of them is poison.

Dead letters are rows in the consumer's own database rather than entries of
another Redis stream: they are what an operator must not lose, and Redis may
lose data (which is what the catch-up from producers' logs is for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import orjson
import structlog
from redis.exceptions import RedisError

from bmc.common.v1 import events_pb2
from services.kit.envelopes import Event, parse_envelope, to_published
from services.kit.errors import FailedPrecondition, NotFound, Unavailable
from services.kit.metrics import DEAD_LETTERS, DEAD_LETTERS_REDRIVEN
from services.kit.names import resource_id
from services.kit.paging import INT, list_page

log = structlog.get_logger("bmc.events")

BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]
_TRANSIENT = (
    OSError,  # ConnectionError, socket errors
    TimeoutError,
    RedisError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.QueryCanceledError,  # a statement timeout: the database is slow, not the event bad
    asyncpg.exceptions.CannotConnectNowError,
    Unavailable,
)


class NotYet(Exception):
    """An event waits for another one (an annulment for its registration):
    it gets six times as long as other failures before it is set aside."""


def transient(exc: BaseException) -> bool:
    """Whether a failure says a dependency is down rather than the event is bad."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, _TRANSIENT)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class DeadLetters:
    """A consumer's dead letters (`dead_letters`, in its service's database)."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, collection: str) -> None:
        self._pool, self.consumer, self.collection = pool, consumer, collection

    async def put(self, source: str, event_id: str, position: int, raw: bytes, attempts: int, error: str) -> int:
        """Sets an event (or an entry that is not one: no id) aside; its dead letter's id."""
        async with self._pool.acquire() as conn:
            found: int = await conn.fetchval(
                "INSERT INTO dead_letters (consumer, source, event_id, position, raw, attempts, error) "
                "VALUES ($1, $2, nullif($3, ''), $4, $5, $6, $7) "
                "ON CONFLICT (consumer, event_id) WHERE event_id IS NOT NULL DO UPDATE SET "
                "attempts = dead_letters.attempts + excluded.attempts, error = excluded.error, "
                "state = 'pending', redrive_time = NULL RETURNING id",
                self.consumer, source, event_id, position or None, raw.decode("utf-8", "replace"), attempts, error,
            )  # fmt: skip
        log.error("event set aside", consumer=self.consumer, source=source, event_id=event_id, error=error)
        DEAD_LETTERS.labels(self.consumer).inc()
        return found

    async def page(self, limit: int, after: Sequence[int] | None) -> list[tuple[asyncpg.Record, tuple[int]]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM dead_letters WHERE consumer = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                self.consumer, after[0] if after else 2**63 - 1, limit,
            )  # fmt: skip
        return [(row, (row["id"],)) for row in rows]

    async def get(self, letter_id: int) -> asyncpg.Record | None:
        async with self._pool.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT * FROM dead_letters WHERE consumer = $1 AND id = $2", self.consumer, letter_id
            )
        return row

    async def settle(self, letter_id: int, error: str) -> asyncpg.Record:
        """Records a re-drive: applied (no error) or one attempt more."""
        async with self._pool.acquire() as conn:
            row: asyncpg.Record = await conn.fetchrow(
                "UPDATE dead_letters SET attempts = attempts + 1, error = CASE WHEN $3 = '' THEN error ELSE $3 END, "
                "state = CASE WHEN $3 = '' THEN 'redriven' ELSE 'pending' END, "
                "redrive_time = CASE WHEN $3 = '' THEN now() END WHERE consumer = $1 AND id = $2 RETURNING *",
                self.consumer, letter_id, error,
            )  # fmt: skip
        if row is not None and not error:
            DEAD_LETTERS_REDRIVEN.labels(self.consumer).inc()
        return row

    def to_proto(self, row: asyncpg.Record) -> events_pb2.DeadLetter:
        letter = events_pb2.DeadLetter(
            name=f"{self.collection}/{row['id']}",
            source=row["source"],
            attempts=row["attempts"],
            error=row["error"],
            state=events_pb2.DeadLetter.STATE_REDRIVEN
            if row["state"] == "redriven"
            else events_pb2.DeadLetter.STATE_PENDING,
        )
        event = parse_envelope(row["raw"].encode())
        try:
            if event is not None:
                letter.event.CopyFrom(to_published(event))
        except (ValueError, TypeError):  # a payload a Struct cannot hold
            event = None
        if event is None:
            letter.raw = row["raw"]
        letter.create_time.FromDatetime(row["create_time"])
        if row["redrive_time"] is not None:
            letter.redrive_time.FromDatetime(row["redrive_time"])
        return letter


@dataclass
class _Failures:
    count: int
    since: float


@dataclass(frozen=True)
class Outcome:
    """What became of a read: the events done with (applied or set aside) and,
    if some are left to retry, why."""

    done: list[Event]
    problem: str = ""


class Applier:
    """Applies events with a consumer's batch handler, finding and setting
    aside poison ones (see the module's doc)."""

    def __init__(
        self,
        handler: BatchHandler,
        letters: DeadLetters | None = None,
        source: str = "",
        *,
        attempts: int = 5,
        after_seconds: float = 10.0,
    ) -> None:
        self.handler, self.letters, self.source = handler, letters, source
        self._attempts, self._after = attempts, after_seconds
        self._failures: dict[str, _Failures] = {}
        self.set_aside = 0

    async def apply(self, events: Sequence[Event]) -> Outcome:
        """Applies `events` (of type `Event`); never raises for a failing handler."""
        if not events:
            return Outcome([])
        try:
            await self.handler(events)
        except Exception as exc:
            if len(events) == 1:
                return await self._failed(events[0], exc)
            return await self._one_by_one(events)
        for event in events:
            self._failures.pop(event.event_id, None)
        return Outcome(list(events))

    async def _one_by_one(self, events: Sequence[Event]) -> Outcome:
        done: list[Event] = []
        problem = ""
        for event in events:
            try:
                await self.handler([event])
            except Exception as exc:
                outcome = await self._failed(event, exc)
                done += outcome.done
                problem = problem or outcome.problem
            else:
                self._failures.pop(event.event_id, None)
                done.append(event)
        return Outcome(done, problem)

    async def _failed(self, event: Event, exc: Exception) -> Outcome:
        problem = describe(exc)
        if self.letters is None or transient(exc):
            return Outcome([], problem)
        now = time.monotonic()
        failures = self._failures.setdefault(event.event_id, _Failures(0, now))
        failures.count += 1
        patience = self._after * (6 if isinstance(exc, NotYet) else 1)
        if failures.count < self._attempts or now - failures.since < patience:
            return Outcome([], problem)
        await self.letters.put(self.source, event.event_id, event.position, event.envelope(), failures.count, problem)
        del self._failures[event.event_id]
        self.set_aside += 1
        return Outcome([event])

    async def set_aside_unreadable(self, raw: Mapping[bytes, bytes], error: str) -> None:
        """A stream entry that is not an event at all: set aside at once (no retry can read it)."""
        if self.letters is None:
            return
        body = orjson.dumps({k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()})
        await self.letters.put(self.source, "", 0, body, 1, error)
        self.set_aside += 1


class DeadLetterRpcs:
    """`ListDeadLetters` and `RedriveDeadLetter`, for a service whose
    consumers set events aside; `dead_letters` is set when it is wired."""

    dead_letters: DeadLetterDesk

    async def ListDeadLetters(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        return await self.dead_letters.list(request)

    async def RedriveDeadLetter(self, request: Any, context: Any) -> events_pb2.DeadLetter:  # noqa: N802
        return await self.dead_letters.redrive(request.name)


class DeadLetterDesk:
    """What operators do with a service's dead letters: list them, and
    re-drive one through the consumer of its source."""

    def __init__(self, letters: DeadLetters, response_type: type[Any], appliers: Mapping[str, Applier]) -> None:
        self._letters, self._response_type, self._appliers = letters, response_type, appliers

    async def list(self, request: Any) -> Any:
        rows, token = await list_page(request, (INT,), 100, self._letters.page)
        return self._response_type(dead_letters=[self._letters.to_proto(r) for r in rows], next_page_token=token)

    async def redrive(self, name: str) -> events_pb2.DeadLetter:
        letter_id = int(resource_id(name, self._letters.collection, "name"))
        row = await self._letters.get(letter_id) if letter_id < 2**63 else None
        if row is None:
            raise NotFound(f"dead letter {name!r} not found", reason="DEAD_LETTER_NOT_FOUND", metadata={"name": name})
        if row["state"] == "redriven":
            return self._letters.to_proto(row)
        event = parse_envelope(row["raw"].encode())
        applier = self._appliers.get(row["source"])
        if event is None or applier is None:
            raise FailedPrecondition(
                f"{name} holds no event this service can apply", reason="NOT_AN_EVENT", metadata={"name": name}
            )
        error = ""
        try:
            await asyncio.wait_for(applier.handler([event]), timeout=60)
        except Exception as exc:
            error = describe(exc)
        row = await self._letters.settle(letter_id, error)
        if error:
            raise FailedPrecondition(
                f"{name} failed again: {error}", reason="REDRIVE_FAILED", metadata={"name": name, "error": error}
            )
        log.info("dead letter re-driven", consumer=self._letters.consumer, letter=name, event_id=event.event_id)
        return self._letters.to_proto(row)
