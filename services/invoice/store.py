"""Invoices in PostgreSQL: the append-only, hash-chained event store and the
read model it keeps current in the same transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import orjson

from services.invoice import chain
from services.invoice.domain import State, next_state
from services.kit.database import PooledStore
from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from services.kit.events import first_time
from services.kit.idempotency import reused
from services.kit.sql import Where


@dataclass(frozen=True)
class EventMeta:
    """Who and what caused an event."""

    actor: str
    tenant: str
    request_id: str = ""
    trace_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"actor": self.actor, "tenant": self.tenant, "request_id": self.request_id, "trace_id": self.trace_id}


@dataclass(frozen=True)
class InvoiceRow:
    """One row of the read model."""

    id: str
    broker: str
    state: State
    registration_number: str
    register_time: dt.datetime
    update_time: dt.datetime
    version: int
    document: bytes  # the submitted invoice, serialized protobuf
    annulment_reason: str
    certificate: str

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> InvoiceRow:
        return cls(
            id=r["id"],
            broker=r["broker"],
            state=State(r["state"]),
            registration_number=r["registration_number"],
            register_time=r["register_time"],
            update_time=r["update_time"],
            version=r["version"],
            document=r["document_pb"],
            annulment_reason=r["annulment_reason"],
            certificate=r["certificate"],
        )


@dataclass(frozen=True)
class NewInvoice:
    """What registration stores: the document (proto JSON for the event,
    protobuf bytes for the read model) and its keys."""

    document_json: str  # the proto JSON mapping, canonical (chain.canonical)
    document_pb: bytes
    number: str
    cufe: str
    seller_nit: str
    buyer_id: str
    issue_date: dt.date
    broker: str
    # Catalog facts of the lines' products, carried on the event for the
    # commission (category, withholding class) so it never has to ask again.
    products: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    # What the request's key stands for (services.kit.idempotency.request_fingerprint).
    fingerprint: str = ""


@dataclass(frozen=True)
class ListFilter:
    broker: str = ""
    state: str = ""
    seller_nit: str = ""
    buyer_id: str = ""
    issue_from: dt.date | None = None
    issue_to: dt.date | None = None
    registered_from: dt.datetime | None = None
    registered_to: dt.datetime | None = None


# Two index lookups: with an OR of both keys the planner scans the whole table.
DUPLICATES_QUERY = (
    "SELECT id, broker, registration_number, cufe, seller_nit, number FROM invoices WHERE cufe = ANY($1::text[]) "
    "UNION SELECT i.id, i.broker, i.registration_number, i.cufe, i.seller_nit, i.number FROM invoices i "
    "JOIN unnest($2::text[], $3::text[]) AS k(seller_nit, number) "
    "ON i.seller_nit = k.seller_nit AND i.number = k.number"
)

# The chain head's row lock serialises every append (positions stay gapless
# and commit in order, which the relay relies on).
HEAD = "SELECT position, hash FROM chain_head WHERE id = 1 FOR UPDATE"
# Events and the chain head they move, as CTEs that a caller's statement
# extends ($1–$12), so that a whole append is one round trip.
APPEND = (
    "appended AS (INSERT INTO events SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], "
    "$5::text[], $6::json[], $7::json[], $8::timestamptz[], $9::text[], $10::text[])), "
    "moved AS (UPDATE chain_head SET position = $11, hash = $12 WHERE id = 1)"
)
REGISTER = (
    f"WITH {APPEND}, "  # noqa: S608 (constants only)
    "read_model AS (INSERT INTO invoices SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], "
    "$17::text[], $18::text[], $19::text[], $20::date[], $21::timestamptz[], $21::timestamptz[], $22::text[], "
    "$23::int[], $24::text[], $24::text[], $25::bytea[])) "
    "INSERT INTO idempotency_keys (tenant, subject, request_id, fingerprint, invoice_id) "
    "SELECT * FROM unnest($26::text[], $27::text[], $28::text[], $29::text[], $30::text[])"
)
TRANSITION = (
    f"WITH {APPEND} "  # noqa: S608 (constants only)
    "UPDATE invoices SET state = $14, version = version + 1, update_time = $15, "
    "annulment_reason = CASE WHEN $14 = 'ANNULLED' THEN $16 ELSE annulment_reason END, "
    "certificate = CASE WHEN $17 <> '' THEN $17 ELSE certificate END "
    "WHERE id = $13 RETURNING *"
)


class Draft(NamedTuple):
    """An event before it has a place in the chain."""

    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    meta: EventMeta


def _chained(head: asyncpg.Record, drafts: Sequence[Draft]) -> tuple[list[chain.ChainedEvent], list[Any]]:
    """The drafts placed after the chain head (locked by the caller), and the
    arguments $1–$12 of `APPEND` that store them and move the head."""
    position, previous = int(head["position"]), str(head["hash"])
    now = dt.datetime.now(dt.UTC)
    events = []
    for draft in drafts:
        position += 1
        event = chain.ChainedEvent(
            position, str(uuid.uuid4()), draft.stream_id, draft.version, draft.type, draft.data,
            draft.meta.as_dict(), now, previous,
        )  # fmt: skip
        previous = event.computed_hash()
        events.append(dataclasses.replace(event, hash=previous))
    arguments = [
        [e.position for e in events], [e.event_id for e in events], [e.stream_id for e in events],
        [e.version for e in events], [e.type for e in events], [chain.canonical(e.data) for e in events],
        [chain.canonical(e.metadata) for e in events], [now] * len(events), [e.prev_hash for e in events],
        [e.hash for e in events], position, previous,
    ]  # fmt: skip
    return events, arguments


def _duplicate(holder: Mapping[str, Any], broker: str, same_cufe: bool) -> AlreadyExists:
    """The refusal of a registration whose CUFE or issuer and number the
    invoice `holder` (its id, broker, registration number) has: naming it only
    when it is the same broker's; another broker's invoice is none of this
    caller's business, not even its name."""
    key = "CUFE" if same_cufe else "issuer and number"
    reason = "DUPLICATE_CUFE" if same_cufe else "DUPLICATE_NUMBER"
    if holder["broker"] != broker:
        return AlreadyExists(f"an invoice with this {key} is already registered", reason=reason)
    invoice_id, number = holder["id"], holder["registration_number"]
    return AlreadyExists(
        f"an invoice with this {key} is already registered ({number})",
        reason=reason,
        metadata={"invoice": f"invoices/{invoice_id}", "registration_number": number},
    )


class InvoiceStore(PooledStore):
    # ------------------------------------------------------------ writing

    async def _earlier(
        self, conn: asyncpg.Connection, items: Sequence[tuple[NewInvoice, EventMeta]]
    ) -> dict[tuple[str, str, str], tuple[InvoiceRow, str]]:
        """The invoices registered before under the items' keys (tenant,
        caller, request id), each with the fingerprint of the request that registered it."""
        keys = list({(meta.tenant, meta.actor, meta.request_id) for _, meta in items if meta.request_id})
        if not keys:
            return {}
        rows = await conn.fetch(
            "SELECT k.tenant AS key_tenant, k.subject AS key_subject, k.request_id AS key_request_id, "
            "k.fingerprint AS key_fingerprint, i.* "
            "FROM unnest($1::text[], $2::text[], $3::text[]) AS r(tenant, subject, request_id) "
            "JOIN idempotency_keys k ON k.tenant = r.tenant AND k.subject = r.subject AND k.request_id = r.request_id "
            "JOIN invoices i ON i.id = k.invoice_id",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        )  # fmt: skip
        return {
            (r["key_tenant"], r["key_subject"], r["key_request_id"]): (InvoiceRow.from_record(r), r["key_fingerprint"])
            for r in rows
        }

    async def register_many(
        self, items: Sequence[tuple[NewInvoice, EventMeta]]
    ) -> list[tuple[InvoiceRow, bool] | AlreadyExists]:
        """Registers a batch in one transaction: one lock of the chain head, one
        idempotency lookup, one duplicate query, one block of registration
        numbers, one statement writing events, read model and keys. Each item
        gets its row (True when new, False when its request id was seen
        before for the same request) or the AlreadyExists that refuses it."""
        outcomes: list[tuple[InvoiceRow, bool] | AlreadyExists | None] = [None] * len(items)
        repeats: dict[int, int] = {}  # item -> the earlier item of this batch with its request id
        async with self.pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow(HEAD)  # serialises registrations
            earlier = await self._earlier(conn, items)
            first: dict[tuple[str, str, str], int] = {}
            for index, (new, meta) in enumerate(items):
                key = (meta.tenant, meta.actor, meta.request_id)
                if not meta.request_id:
                    continue
                if key in earlier:
                    row, fingerprint = earlier[key]
                    # Keys recorded before fingerprints were kept have none, and match any repeat.
                    same = not fingerprint or fingerprint == new.fingerprint
                    outcomes[index] = (row, False) if same else reused(meta.request_id)
                elif key in first:
                    repeats[index] = first[key] if items[first[key]][0].fingerprint == new.fingerprint else -1
                else:
                    first[key] = index
            fresh = [i for i, outcome in enumerate(outcomes) if outcome is None and i not in repeats]
            taken = await conn.fetch(
                DUPLICATES_QUERY,
                [items[i][0].cufe for i in fresh], [items[i][0].seller_nit for i in fresh],
                [items[i][0].number for i in fresh],
            )  # fmt: skip
            # Who holds each key: a registered invoice's row, or the index of an earlier item of this batch.
            cufes: dict[str, Any] = {r["cufe"]: r for r in taken}
            numbers: dict[tuple[str, str], Any] = {(r["seller_nit"], r["number"]): r for r in taken}
            accepted, clashes = [], {}
            for i in fresh:
                new = items[i][0]
                same = new.cufe in cufes
                holder = cufes[new.cufe] if same else numbers.get((new.seller_nit, new.number))
                if isinstance(holder, int):
                    clashes[i] = (holder, same)
                elif holder is not None:
                    outcomes[i] = _duplicate(holder, new.broker, same)
                else:
                    cufes[new.cufe] = numbers[(new.seller_nit, new.number)] = i
                    accepted.append(i)
            if accepted:
                rows = await self._insert(conn, head, [items[i] for i in accepted])
                for i, row in zip(accepted, rows, strict=True):
                    outcomes[i] = (row, True)
        for index, (winner, same) in clashes.items():  # refused in favour of an earlier item, now registered
            won = outcomes[winner]
            assert isinstance(won, tuple)
            row = won[0]
            holder = {"id": row.id, "broker": row.broker, "registration_number": row.registration_number}
            outcomes[index] = _duplicate(holder, items[index][0].broker, same)
        for index, original in repeats.items():  # a retry that raced its original gets the original's answer
            if original < 0:
                outcomes[index] = reused(items[index][1].request_id)
                continue
            answer = outcomes[original]
            outcomes[index] = (answer[0], False) if isinstance(answer, tuple) else answer
        return [outcome for outcome in outcomes if outcome is not None]

    async def _insert(
        self,
        conn: asyncpg.Connection,
        head: asyncpg.Record,
        accepted: Sequence[tuple[NewInvoice, EventMeta]],
    ) -> list[InvoiceRow]:
        """Writes the accepted registrations after the chain head: numbers,
        events, read model and idempotency keys."""
        year = dt.datetime.now(dt.UTC).year
        last = await conn.fetchval(
            "INSERT INTO registration_counters VALUES ($1, $2) "
            "ON CONFLICT (year) DO UPDATE SET last = registration_counters.last + $2 RETURNING last",
            year, len(accepted),
        )  # fmt: skip
        state = next_state(None, "InvoiceRegistered")
        ids = [uuid.uuid4().hex for _ in accepted]
        numbers = [f"{year}-{last - len(accepted) + offset + 1:08d}" for offset in range(len(accepted))]
        drafts = [
            Draft(invoice_id, 1, "InvoiceRegistered",
                  {"document": orjson.Fragment(new.document_json), "registration_number": number,
                   "broker": new.broker, "products": dict(new.products)},
                  meta)
            for (new, meta), invoice_id, number in zip(accepted, ids, numbers, strict=True)
        ]  # fmt: skip
        events, arguments = _chained(head, drafts)
        now = events[0].record_time
        news = [new for new, _ in accepted]
        keys = [
            (m.tenant, m.actor, m.request_id, n.fingerprint, invoice_id)
            for (n, m), invoice_id in zip(accepted, ids, strict=True)
            if m.request_id
        ]
        key_columns = [list(column) for column in zip(*keys, strict=True)] or [[] for _ in range(5)]
        await conn.execute(
            REGISTER, *arguments,
            ids, [n.broker for n in news], [state.value] * len(news), [n.number for n in news],
            [n.cufe for n in news], [n.seller_nit for n in news], [n.buyer_id for n in news],
            [n.issue_date for n in news], [now] * len(news), numbers, [1] * len(news), [""] * len(news),
            [n.document_pb for n in news],
            *key_columns,
        )  # fmt: skip
        return [
            InvoiceRow(invoice_id, new.broker, state, number, now, now, 1, new.document_pb, "", "")
            for new, invoice_id, number in zip(news, ids, numbers, strict=True)
        ]

    async def transition(
        self,
        invoice_id: str,
        event_type: str,
        data: Mapping[str, Any],
        meta: EventMeta,
        expected_version: int = 0,
        applying: Sequence[tuple[str, str]] = (),
    ) -> InvoiceRow:
        """Appends a lifecycle event (annulment, certification) if the state
        machine allows it. `applying` = keys (consumer, id) make it
        idempotent: if any was applied before, nothing changes (an event's
        id, and the fact it reports, such as a commission's name: a step
        the reconciliation recorded is not recorded again by its event)."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = [await first_time(conn, *key) for key in applying]
            if not all(fresh):
                row = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice_id)
                if row is None:
                    raise NotFound(f"invoice invoices/{invoice_id} not found", reason="INVOICE_NOT_FOUND")
                return InvoiceRow.from_record(row)
            current = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1 FOR UPDATE", invoice_id)
            if current is None:
                raise NotFound(f"invoice invoices/{invoice_id} not found", reason="INVOICE_NOT_FOUND")
            row = InvoiceRow.from_record(current)
            if expected_version and expected_version != row.version:
                raise Aborted(
                    f"invoice changed since it was read (version {expected_version}, now {row.version})",
                    reason="VERSION_MISMATCH",
                )
            try:
                state = next_state(row.state, event_type)
            except ValueError as exc:
                raise FailedPrecondition(
                    str(exc), reason="ILLEGAL_TRANSITION", metadata={"state": row.state.value}
                ) from exc
            head = await conn.fetchrow(HEAD)
            (event,), arguments = _chained(head, [Draft(invoice_id, row.version + 1, event_type, data, meta)])
            updated = await conn.fetchrow(
                TRANSITION, *arguments, invoice_id, state.value, event.record_time,
                str(data.get("reason", "")), str(data.get("certificate", "")),
            )  # fmt: skip
            assert updated is not None
            return InvoiceRow.from_record(updated)

    # ------------------------------------------------------------ reading

    async def get(self, invoice_id: str, broker: str = "") -> InvoiceRow | None:
        if broker:
            query, args = "SELECT * FROM invoices WHERE id = $1 AND broker = $2", [invoice_id, broker]
        else:
            query, args = "SELECT * FROM invoices WHERE id = $1", [invoice_id]
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(query, *args)
        return InvoiceRow.from_record(row) if row else None

    async def search(
        self, limit: int, after: Sequence[Any] | None, where: ListFilter
    ) -> list[tuple[InvoiceRow, tuple[dt.datetime, str]]]:
        """A page of the read model, newest registrations first, each with its sort key."""
        sql = Where()
        for column, op, value in (
            ("broker", "=", where.broker), ("state", "=", where.state), ("seller_nit", "=", where.seller_nit),
            ("buyer_id", "=", where.buyer_id), ("issue_date", ">=", where.issue_from),
            ("issue_date", "<=", where.issue_to), ("register_time", ">=", where.registered_from),
            ("register_time", "<", where.registered_to),
        ):  # fmt: skip
            if value:
                sql.add(f"{column} {op} ?", value)
        if after:
            sql.add("(register_time, id) < (?, ?)", *after)
        rows = await self.select(
            sql, "SELECT * FROM invoices", f"ORDER BY register_time DESC, id DESC LIMIT {sql.bind(limit)}"
        )
        return [(InvoiceRow.from_record(r), (r["register_time"], r["id"])) for r in rows]

    async def events(
        self, limit: int, after: Sequence[int] | None, invoice_id: str
    ) -> list[tuple[chain.ChainedEvent, tuple[int]]]:
        """An invoice's events in order, after the version `after` holds, each with its sort key."""
        after_version = after[0] if after else 0
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                invoice_id, after_version, limit,
            )  # fmt: skip
        return [(_event(r), (r["version"],)) for r in rows]

    async def behind(self, older_than: dt.timedelta, limit: int) -> list[InvoiceRow]:
        """Live registrations older than `older_than` not yet certified, oldest first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM invoices WHERE state IN ('REGISTERED', 'COMMISSIONED') "
                "AND register_time < now() - $1::interval ORDER BY register_time LIMIT $2",
                older_than, limit,
            )  # fmt: skip
        return [InvoiceRow.from_record(r) for r in rows]

    async def registration_event(self, invoice_id: str) -> asyncpg.Record | None:
        """The registration of an invoice as the relay publishes it."""
        async with self.pool.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(_REGISTRATION_QUERY, invoice_id)
        return row

    async def log(
        self, limit: int, after: Sequence[int] | None, after_position: int, tenant: str
    ) -> list[tuple[chain.ChainedEvent, tuple[int]]]:
        """Events of all invoices (of `tenant`, if one) in the order of the log, after a position."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM events WHERE position > $1 AND ($2 = '' OR metadata->>'tenant' = $2) "
                "ORDER BY position LIMIT $3",
                after[0] if after else after_position, tenant, limit,
            )  # fmt: skip
        return [(_event(r), (r["position"],)) for r in rows]

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[ChainSnapshot]:
        """The chain as of one instant (a repeatable-read, read-only
        transaction): registrations committing meanwhile are not half seen."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield ChainSnapshot(conn)


class ChainSnapshot:
    """Reads of the event chain inside one snapshot."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def walk(self, from_position: int, batch: int = 5_000) -> AsyncGenerator[chain.ChainedEvent, None]:
        """Every event from `from_position`, in order, a batch at a time."""
        position = from_position - 1
        while True:
            rows = await self._conn.fetch(
                "SELECT * FROM events WHERE position > $1 ORDER BY position LIMIT $2", position, batch
            )
            if not rows:
                return
            for r in rows:
                yield _event(r)
            position = rows[-1]["position"]

    async def hash_before(self, position: int) -> str:
        if position <= 1:
            return chain.GENESIS
        value = await self._conn.fetchval("SELECT hash FROM events WHERE position = $1", position - 1)
        return str(value) if value else chain.GENESIS

    async def head(self) -> tuple[int, str]:
        row = await self._conn.fetchrow("SELECT position, hash FROM chain_head WHERE id = 1")
        assert row is not None
        return int(row["position"]), str(row["hash"])


# The relay's view of the store: every event is also the outbox entry.
_PUBLISHED = (
    "SELECT position, event_id::text AS event_id, type, stream_id, version, metadata->>'tenant' AS tenant, "
    "metadata->>'trace_id' AS trace_id, record_time AS time, data::text AS data FROM events "
)
RELAY_QUERY = _PUBLISHED + "WHERE position > $1 ORDER BY position LIMIT $2"
_REGISTRATION_QUERY = _PUBLISHED + "WHERE stream_id = $1 AND version = 1"


def _event(r: asyncpg.Record) -> chain.ChainedEvent:
    return chain.ChainedEvent(
        position=r["position"],
        event_id=str(r["event_id"]),
        stream_id=r["stream_id"],
        version=r["version"],
        type=r["type"],
        data=json.loads(r["data"]),
        metadata=json.loads(r["metadata"]),
        record_time=r["record_time"],
        prev_hash=r["prev_hash"],
        hash=r["hash"],
    )
