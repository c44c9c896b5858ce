"""A consumer's position in each producer's log, and the catch-up that
reads from the producer what the stream lost.

Redis is not the only copy of an event: the producer's database is (its
outbox, or its event store), and the stream only carries events quickly.
Every event has a gapless position in its producer's log, so a consumer
knows exactly what it has applied: its mark (every position up to it is
done with, kept in `consumer_marks`) and the positions the stream brought
beyond it. When a position stays missing for longer than `grace` (Redis
restarted empty, an entry was trimmed), or when the consumer has been idle
for `probe` (the lost events were the last ones), it reads the events after
its mark from the producer's feed RPC and applies those it has not.
Consumers are idempotent by event id, so an event both routes deliver is
applied once.

One worker per consumer (the holder of an advisory lock) catches up and
moves the mark; the others only skip what the mark says is done.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import structlog

from services.kit.background import cancel
from services.kit.dead_letters import Applier, describe
from services.kit.envelopes import Event, from_feed, to_published
from services.kit.leadership import while_leader
from services.kit.paging import INT, list_page
from services.kit.telemetry import consumer_spans

log = structlog.get_logger("bmc.events")

# Reads up to `limit` events after a position of the producer's log, in order.
Feed = Callable[[int, int], Awaitable[Sequence[Event]]]


class Catchup:
    def __init__(
        self,
        pool: asyncpg.Pool,
        consumer: str,
        source: str,
        feed: Feed,
        applier: Applier,
        *,
        grace: float = 5.0,
        probe: float = 5.0,
        page: int = 500,
        processed_retention: dt.timedelta | None = None,
    ) -> None:
        self._pool, self._consumer, self.source = pool, consumer, source
        self._feed, self._applier = feed, applier
        self._grace, self._probe, self._page = grace, probe, page
        self._processed_retention = processed_retention
        self.mark = 0
        self._stored = 0
        self._seen: set[int] = set()
        self._gap: tuple[int, float] | None = None  # (the mark it follows, since when)
        self._last_read = 0.0
        self._more = False  # the last read filled its page
        self._suspect_until = 0.0  # until when Redis is suspected of having lost events
        self._next_prune = 0.0
        self._task: asyncio.Task[None] | None = None
        self.caught_up = 0  # events applied from the feed (the stream had lost them, or was slow)
        self.problem = ""

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            self.mark = self._stored = await self._load(conn)
        self._task = asyncio.create_task(
            while_leader(self._pool, f"catchup:{self._consumer}:{self.source}", self._catch_up_while_leader),
            name=f"catchup:{self._consumer}:{self.source}",
        )

    async def stop(self) -> None:
        await cancel(self._task)

    def applied(self, position: int) -> bool:
        """Whether the event at `position` was done with already."""
        return 0 < position <= self.mark

    def stream_lost(self) -> None:
        """Redis lost the stream or its group (it restarted empty, or failed
        over): read the producer's log at once, whatever the events' age, and
        every half second for the grace, instead of waiting for a gap or a
        probe."""
        self._suspect_until = time.monotonic() + self._grace + 1.0

    def delivered(self, events: Sequence[Event]) -> None:
        """The stream brought these events and they were done with."""
        self._seen.update(e.position for e in events if e.position > self.mark)

    async def _load(self, conn: asyncpg.Connection) -> int:
        mark: int = await conn.fetchval(
            "INSERT INTO consumer_marks (consumer, source, position) VALUES ($1, $2, 0) "
            "ON CONFLICT (consumer, source) DO UPDATE SET position = consumer_marks.position RETURNING position",
            self._consumer, self.source,
        )  # fmt: skip
        return mark

    async def _catch_up_while_leader(self, conn: asyncpg.Connection) -> None:
        self.mark = max(self.mark, await self._load(conn))
        while True:
            try:
                await self.run_once(conn)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                raise  # the leader's session may be gone: let the leadership loop decide
            except Exception as exc:  # the producer is unreachable, say: try again later
                self._report(describe(exc))
                self._more = False
            await asyncio.sleep(0.0 if self._more else 0.5)

    def _advance(self) -> None:
        while self.mark + 1 in self._seen:
            self.mark += 1
            self._seen.discard(self.mark)

    def _due(self) -> bool:
        """Whether to read the producer's feed now: the event after the mark
        has been missing for the grace while later ones arrived, or the
        consumer has not asked for a while (a lost tail leaves no gap)."""
        now = time.monotonic()
        if self._more:  # the last read filled its page: read on at once
            return True
        if now < self._suspect_until:
            return now - self._last_read >= 0.5
        if not self._seen:
            self._gap = None
        elif self._gap is None or self._gap[0] != self.mark:  # a new gap: the stream may yet bring it
            self._gap = (self.mark, now)
        if self._gap is not None and now - self._gap[1] >= self._grace:
            return now - self._last_read >= 0.5
        return now - self._last_read >= self._probe

    async def run_once(self, conn: asyncpg.Connection) -> int:
        """One step: moves the mark over what the stream delivered and, when
        due, applies what the feed has that the stream did not bring; the
        number of events the catch-up applied."""
        self._advance()
        applied = 0
        if self._due():
            self._last_read = time.monotonic()
            applied = await self._read_feed()
        if self.mark != self._stored:
            await conn.execute(
                "UPDATE consumer_marks SET position = greatest(position, $3), update_time = now() "
                "WHERE consumer = $1 AND source = $2",
                self._consumer, self.source, self.mark,
            )  # fmt: skip
            self._stored = self.mark
        await self._prune(conn)
        return applied

    async def _read_feed(self) -> int:
        events = await self._feed(self.mark, self._page)
        # Events younger than the grace are likely on their way on the stream,
        # unless Redis just lost it (then an event read twice is applied once).
        grace = 0.0 if time.monotonic() < self._suspect_until else self._grace
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace)
        ready = list(itertools.takewhile(lambda e: e.occurred <= cutoff, events))
        self._more = False
        if not ready:
            self._report("")
            return 0
        if ready[0].position > self.mark + 1:
            log.warning(
                "events no longer in the producer's log; reconcile",
                consumer=self._consumer, source=self.source, missing=ready[0].position - self.mark - 1,
            )  # fmt: skip
        todo = [e for e in ready if e.position not in self._seen]
        with consumer_spans(f"{self.source}.events", todo) as continued:
            outcome = await self._applier.apply(continued)
        done = {e.position for e in outcome.done} | self._seen
        for event in ready:
            if event.position not in done:
                break
            self.mark = event.position
            self._seen.discard(event.position)
        self._advance()
        self._more = len(events) >= self._page and self.mark >= events[-1].position  # all of a full page done
        if outcome.done:
            self.caught_up += len(outcome.done)
            log.info("caught up", consumer=self._consumer, source=self.source, events=len(outcome.done), mark=self.mark)
        self._report(outcome.problem)
        return len(outcome.done)

    async def _prune(self, conn: asyncpg.Connection) -> None:
        """Forgets ids of events applied long ago: below the mark, the mark
        itself says they are done with."""
        if self._processed_retention is None or time.monotonic() < self._next_prune:
            return
        status: str = await conn.execute(
            "DELETE FROM processed_events WHERE ctid IN (SELECT ctid FROM processed_events "
            "WHERE processed_at < now() - $1::interval LIMIT 10000)",
            self._processed_retention,
        )
        pruned = int(status.rsplit(" ", 1)[-1])
        self._next_prune = time.monotonic() + (1.0 if pruned == 10_000 else 600.0)

    def _report(self, problem: str) -> None:
        if problem and problem != self.problem:
            log.warning("catch-up paused", consumer=self._consumer, source=self.source, error=problem)
        self.problem = problem


def remote_feed(call: Callable[[Any], Awaitable[Any]], request_type: type[Any], **fixed: Any) -> Feed:
    """A producer's feed RPC (`ListCommissionEvents`, `ListInvoiceEvents` on
    `invoices/-`...) as a `Feed`; `call` sends a request (a service client's)."""

    async def read(after: int, limit: int) -> list[Event]:
        response = await call(request_type(after_position=after, page_size=limit, **fixed))
        return [from_feed(message) for message in response.events]

    return read


async def outbox_page(pool: asyncpg.Pool, query: str, request: Any, response_type: type[Any]) -> Any:
    """A page of a service's feed RPC (`after_position`, `page_size`,
    `page_token`) from its relay query."""

    async def fetch(limit: int, after: Sequence[int] | None) -> list[tuple[Any, tuple[int]]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(query, after[0] if after else request.after_position, limit)
        return [(to_published(Event.from_row(row)), (row["position"],)) for row in rows]

    events, token = await list_page(request, (INT,), 100, fetch)
    return response_type(events=events, next_page_token=token)
