"""Invoices in PostgreSQL: the append-only, hash-chained event store and the
read model it keeps current in the same transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.invoice import chain
from services.invoice.domain import State, next_state
from services.kit.database import PooledStore
from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from services.kit.events import first_time
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

    document: Mapping[str, Any]
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


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# Two index lookups: with an OR of both keys the planner scans the whole table.
DUPLICATES_QUERY = (
    "SELECT id, registration_number, cufe, seller_nit, number FROM invoices WHERE cufe = ANY($1::text[]) "
    "UNION SELECT i.id, i.registration_number, i.cufe, i.seller_nit, i.number FROM invoices i "
    "JOIN unnest($2::text[], $3::text[]) AS k(seller_nit, number) "
    "ON i.seller_nit = k.seller_nit AND i.number = k.number"
)


class InvoiceStore(PooledStore):
    # ------------------------------------------------------------ writing

    async def _append(
        self, conn: asyncpg.Connection, drafts: Sequence[tuple[str, int, str, Mapping[str, Any], EventMeta]]
    ) -> list[chain.ChainedEvent]:
        """Appends events (stream id, version, type, data, meta) at the head of
        the chain, in order; the caller holds a transaction."""
        head = await conn.fetchrow("SELECT position, hash FROM chain_head WHERE id = 1 FOR UPDATE")
        assert head is not None
        position, previous = int(head["position"]), str(head["hash"])
        now = dt.datetime.now(dt.UTC)
        events, records = [], []
        for stream_id, version, type_, data, meta in drafts:
            position += 1
            draft = chain.ChainedEvent(
                position, str(uuid.uuid4()), stream_id, version, type_, data, meta.as_dict(), now, previous
            )
            previous = draft.computed_hash()
            events.append(dataclasses.replace(draft, hash=previous))
            records.append((
                position, draft.event_id, stream_id, version, type_, _json(data), _json(draft.metadata),
                now, draft.prev_hash, previous,
            ))  # fmt: skip
        await conn.copy_records_to_table("events", records=records)
        await conn.execute("UPDATE chain_head SET position = $1, hash = $2 WHERE id = 1", position, previous)
        return events

    async def _earlier(
        self, conn: asyncpg.Connection, items: Sequence[tuple[NewInvoice, EventMeta]]
    ) -> dict[tuple[str, str], InvoiceRow]:
        """The invoices registered before under the items' (tenant, request id)."""
        keys = list({(meta.tenant, meta.request_id) for _, meta in items if meta.request_id})
        if not keys:
            return {}
        rows = await conn.fetch(
            "SELECT k.tenant AS key_tenant, k.request_id AS key_request_id, i.* "
            "FROM unnest($1::text[], $2::text[]) AS r(tenant, request_id) "
            "JOIN idempotency_keys k ON k.tenant = r.tenant AND k.request_id = r.request_id "
            "JOIN invoices i ON i.id = k.invoice_id",
            [t for t, _ in keys], [r for _, r in keys],
        )  # fmt: skip
        return {(r["key_tenant"], r["key_request_id"]): InvoiceRow.from_record(r) for r in rows}

    async def register(self, new: NewInvoice, meta: EventMeta) -> tuple[InvoiceRow, bool]:
        """The registered invoice and True; or, for a repeated request id, the
        first registration and False. AlreadyExists for a duplicate invoice."""
        (outcome,) = await self.register_many([(new, meta)])
        if isinstance(outcome, AlreadyExists):
            raise outcome
        return outcome

    async def register_many(
        self, items: Sequence[tuple[NewInvoice, EventMeta]]
    ) -> list[tuple[InvoiceRow, bool] | AlreadyExists]:
        """Registers a batch in one transaction: one lock of the chain head, one
        duplicate query, one block of registration numbers. Each item gets its
        row (True when new, False when its request id was seen before) or the
        AlreadyExists that refuses it."""
        outcomes: list[tuple[InvoiceRow, bool] | AlreadyExists | None] = [None] * len(items)
        repeats: dict[int, int] = {}  # item -> the earlier item of this batch with its request id
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM chain_head WHERE id = 1 FOR UPDATE")  # serialise registrations
            earlier = await self._earlier(conn, items)
            first: dict[tuple[str, str], int] = {}
            for index, (_, meta) in enumerate(items):
                key = (meta.tenant, meta.request_id)
                if not meta.request_id:
                    continue
                if key in earlier:
                    outcomes[index] = (earlier[key], False)
                elif key in first:
                    repeats[index] = first[key]
                else:
                    first[key] = index
            fresh = [i for i, outcome in enumerate(outcomes) if outcome is None and i not in repeats]
            taken = await conn.fetch(
                DUPLICATES_QUERY,
                [items[i][0].cufe for i in fresh], [items[i][0].seller_nit for i in fresh],
                [items[i][0].number for i in fresh],
            )  # fmt: skip
            cufes = {r["cufe"]: r for r in taken}
            numbers = {(r["seller_nit"], r["number"]): r for r in taken}
            accepted = []
            for i in fresh:
                new = items[i][0]
                clash = cufes.get(new.cufe) or numbers.get((new.seller_nit, new.number))
                if clash is not None:
                    same = clash["cufe"] == new.cufe
                    outcomes[i] = AlreadyExists(
                        f"an invoice with this {'CUFE' if same else 'issuer and number'} is already registered "
                        f"({clash['registration_number']})",
                        reason="DUPLICATE_CUFE" if same else "DUPLICATE_NUMBER",
                        metadata={"invoice": f"invoices/{clash['id']}"},
                    )
                    continue
                # later items of the same batch clash with this one too
                cufes[new.cufe] = numbers[(new.seller_nit, new.number)] = {
                    "cufe": new.cufe, "id": "(same batch)", "registration_number": "earlier in this batch"
                }  # fmt: skip
                accepted.append(i)
            if accepted:
                await self._insert(conn, items, accepted, outcomes)
        for index, original in repeats.items():  # a retry that raced its original gets the original's answer
            answer = outcomes[original]
            outcomes[index] = (answer[0], False) if isinstance(answer, tuple) else answer
        return [outcome for outcome in outcomes if outcome is not None]

    async def _insert(
        self,
        conn: asyncpg.Connection,
        items: Sequence[tuple[NewInvoice, EventMeta]],
        accepted: list[int],
        outcomes: list[tuple[InvoiceRow, bool] | AlreadyExists | None],
    ) -> None:
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
            (invoice_id, 1, "InvoiceRegistered",
             {"document": dict(items[i][0].document), "registration_number": number, "broker": items[i][0].broker,
              "products": dict(items[i][0].products)},
             items[i][1])
            for i, invoice_id, number in zip(accepted, ids, numbers, strict=True)
        ]  # fmt: skip
        events = await self._append(conn, drafts)
        rows, keys = [], []
        for i, invoice_id, number, event in zip(accepted, ids, numbers, events, strict=True):
            new, meta = items[i]
            now = event.record_time
            rows.append((
                invoice_id, new.broker, state.value, new.number, new.cufe, new.seller_nit, new.buyer_id,
                new.issue_date, now, now, number, 1, "", "", new.document_pb,
            ))  # fmt: skip
            if meta.request_id:
                keys.append((meta.tenant, meta.request_id, invoice_id))
            outcomes[i] = (
                InvoiceRow(invoice_id, new.broker, state, number, now, now, 1, new.document_pb, "", ""),
                True,
            )
        # COPY: a whole batch of registrations is written in a few round trips.
        await conn.copy_records_to_table("invoices", records=rows)
        if keys:
            await conn.executemany("INSERT INTO idempotency_keys VALUES ($1, $2, $3)", keys)

    async def transition(
        self,
        invoice_id: str,
        event_type: str,
        data: Mapping[str, Any],
        meta: EventMeta,
        expected_version: int = 0,
        applying: tuple[str, str] | None = None,
    ) -> InvoiceRow:
        """Appends a lifecycle event (annulment, certification) if the state
        machine allows it. `applying` = (consumer, event id) makes it
        idempotent: an event applied before changes nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            if applying is not None and not await first_time(conn, *applying):
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
            (event,) = await self._append(conn, [(invoice_id, row.version + 1, event_type, data, meta)])
            updated = await conn.fetchrow(
                "UPDATE invoices SET state = $2, version = version + 1, update_time = $3, "
                "annulment_reason = CASE WHEN $2 = 'ANNULLED' THEN $4 ELSE annulment_reason END, "
                "certificate = CASE WHEN $5 <> '' THEN $5 ELSE certificate END "
                "WHERE id = $1 RETURNING *",
                invoice_id, state.value, event.record_time,
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

    async def search(self, where: ListFilter, limit: int, after: Sequence[str] | None) -> list[InvoiceRow]:
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
            sql.add("(register_time, id) < (?, ?)", dt.datetime.fromisoformat(after[0]), after[1])
        rows = await self.select(
            sql, "SELECT * FROM invoices", f"ORDER BY register_time DESC, id DESC LIMIT {sql.bind(limit)}"
        )
        return [InvoiceRow.from_record(r) for r in rows]

    async def events(self, invoice_id: str, limit: int, after_version: int) -> list[chain.ChainedEvent]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                invoice_id, after_version, limit,
            )  # fmt: skip
        return [_event(r) for r in rows]

    async def walk(self, from_position: int = 1, batch: int = 5_000) -> AsyncGenerator[chain.ChainedEvent, None]:
        """Every event from `from_position`, in order, a batch at a time."""
        position = from_position - 1
        async with self.pool.acquire() as conn:
            while True:
                rows = await conn.fetch(
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
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT hash FROM events WHERE position = $1", position - 1)
        return str(value) if value else chain.GENESIS

    async def head(self) -> tuple[int, str]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT position, hash FROM chain_head WHERE id = 1")
        assert row is not None
        return int(row["position"]), str(row["hash"])


# The relay's view of the store: every event is also the outbox entry.
RELAY_QUERY = (
    "SELECT position, event_id::text AS event_id, type, stream_id, version, metadata->>'tenant' AS tenant, "
    "metadata->>'trace_id' AS trace_id, record_time AS time, data::text AS data "
    "FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)


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
