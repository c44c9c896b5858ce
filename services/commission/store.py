"""Persistence of the commission service: tariff versions and UVT values,
commissions with their ledger entries and outbox events (written together,
once per event id), closed periods and settlements (aggregated in SQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from bmc.commission.v1 import commission_pb2
from services.commission.conversion import date_from_proto, schedule_from_proto, schedule_to_proto
from services.commission.domain import TariffBook, WithholdingRule, booking_period, period_end, period_of
from services.commission.reference import SeedSchedule, UvtEntry
from services.commission.settlement import Settlement, Totals
from services.kit.database import PooledStore
from services.kit.errors import AlreadyExists
from services.kit.events import OUTBOX_COLUMNS
from services.kit.sql import Where

# Ledger writers hold it shared; closing a period holds it exclusively, so
# an entry is never booked into a period while that period is being closed.
_CLOSE_LOCK = int.from_bytes(hashlib.sha256(b"commission:close-period").digest()[:8], "big", signed=True)
CONSUMER = "commission"


@dataclass(frozen=True)
class Charge:
    """A commission computed for a registered invoice, to record."""

    event_id: str
    trace_id: str
    commission: commission_pb2.Commission  # name, invoice, broker, buyer, date, breakdown, withholding
    category: str


@dataclass(frozen=True)
class Reversal:
    """An annulled invoice whose commission is to be reversed."""

    event_id: str
    trace_id: str
    invoice_id: str
    time: dt.datetime


@dataclass(frozen=True)
class Applied:
    """What one batch of events did."""

    charged: int = 0
    reversed: int = 0
    repeated: int = 0  # events applied before
    deferred: Sequence[str] = ()  # reversals whose charge is not recorded yet


class CommissionStore(PooledStore):
    # ------------------------------------------------------------ reference data

    async def seed(self, schedules: Sequence[SeedSchedule], uvts: Sequence[UvtEntry]) -> None:
        """Records the shipped tariff and UVT values that are not there yet
        (a version of the same id or date, or a year already known, wins)."""
        async with self.pool.acquire() as conn, conn.transaction():
            for seed in schedules:
                proto = schedule_to_proto(seed.schedule, seed.display_name, seed.source)
                await conn.execute(
                    "INSERT INTO tariff_schedules (id, effective_date, schedule, creator) "
                    "VALUES ($1, $2, $3, 'seed:tariffs.example.toml') ON CONFLICT DO NOTHING",
                    seed.schedule.schedule_id, seed.schedule.effective_date, proto.SerializeToString(),
                )  # fmt: skip
            await conn.executemany(
                "INSERT INTO uvt_values VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [(u.year, u.value, u.source) for u in uvts],
            )

    @staticmethod
    def _schedule(row: asyncpg.Record) -> commission_pb2.TariffSchedule:
        message = commission_pb2.TariffSchedule.FromString(row["schedule"])
        message.create_time.FromDatetime(row["create_time"])
        message.creator = row["creator"]
        return message

    async def schedules(self) -> list[commission_pb2.TariffSchedule]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM tariff_schedules ORDER BY effective_date")
        return [self._schedule(r) for r in rows]

    async def create_schedule(
        self, schedule_id: str, effective_date: dt.date, message: commission_pb2.TariffSchedule, creator: str
    ) -> commission_pb2.TariffSchedule:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO tariff_schedules (id, effective_date, schedule, creator) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING *",
                schedule_id, effective_date, message.SerializeToString(), creator,
            )  # fmt: skip
            if row is None:
                clash = await conn.fetchrow(
                    "SELECT id FROM tariff_schedules WHERE id = $1 OR effective_date = $2", schedule_id, effective_date
                )
                same_id = clash is not None and clash["id"] == schedule_id
                raise AlreadyExists(
                    f"tariffSchedules/{schedule_id} already exists"
                    if same_id
                    else f"a tariff version already takes effect on {effective_date} ({clash['id'] if clash else '?'})",
                    reason="TARIFF_SCHEDULE_EXISTS" if same_id else "EFFECTIVE_DATE_TAKEN",
                )
        return self._schedule(row)

    async def get_schedule(self, schedule_id: str) -> commission_pb2.TariffSchedule | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM tariff_schedules WHERE id = $1", schedule_id)
        return self._schedule(row) if row else None

    async def list_schedules(
        self, size: int, after: Sequence[Any] | None, effective_on: dt.date | None
    ) -> list[tuple[commission_pb2.TariffSchedule, tuple[dt.date, str]]]:
        """Newest effective date first; `effective_on` keeps the one in force that day."""
        sql = Where()
        if effective_on is not None:
            sql.add(
                "effective_date = (SELECT max(effective_date) FROM tariff_schedules WHERE effective_date <= ?)",
                effective_on,
            )
        if after is not None:
            sql.add("(effective_date, id) < (?, ?)", *after)
        rows = await self.select(
            sql, "SELECT * FROM tariff_schedules", f"ORDER BY effective_date DESC, id DESC LIMIT {sql.bind(size)}"
        )
        return [(self._schedule(r), (r["effective_date"], r["id"])) for r in rows]

    async def book(self, withholding: Sequence[WithholdingRule]) -> TariffBook:
        """The tariff versions and UVT values as recorded now."""
        schedules = [schedule_from_proto(m, m.name.removeprefix("tariffSchedules/")) for m in await self.schedules()]
        return TariffBook(schedules, {year: value for year, value, _ in await self.uvt_values()}, withholding)

    async def uvt_values(self) -> list[tuple[int, Decimal, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT year, value, source FROM uvt_values ORDER BY year DESC")
        return [(r["year"], r["value"], r["source"]) for r in rows]

    async def create_uvt(self, year: int, value: Decimal, source: str) -> None:
        async with self.pool.acquire() as conn:
            created = await conn.fetchval(
                "INSERT INTO uvt_values VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1", year, value, source
            )
        if created is None:
            # Commissions already computed with it must stay reproducible.
            raise AlreadyExists(f"the UVT of {year} is already recorded", reason="UVT_EXISTS")

    # ------------------------------------------------------------ commissions

    async def apply(self, charges: Sequence[Charge], reversals: Sequence[Reversal]) -> Applied:
        """Records a batch of events in one transaction, each once: commissions
        with their CHARGE entries, reversals with REVERSAL entries, and an
        outbox event for each. A reversal whose charge is not recorded yet is
        left out (and not marked as applied) so that it can be retried."""
        ids = [c.event_id for c in charges] + [r.event_id for r in reversals]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _CLOSE_LOCK)
            fresh = {
                r["event_id"]
                for r in await conn.fetch(
                    "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[]) "
                    "ON CONFLICT DO NOTHING RETURNING event_id",
                    CONSUMER,
                    ids,
                )
            }
            charges = [c for c in charges if c.event_id in fresh]
            reversals = [r for r in reversals if r.event_id in fresh]
            closed = {r["period"] for r in await conn.fetch("SELECT period FROM closed_periods")}
            head = await conn.fetchrow("SELECT ledger, outbox FROM heads WHERE id = 1 FOR UPDATE")
            assert head is not None
            writer = _Writer(int(head["ledger"]), int(head["outbox"]), closed)
            charged = await self._charge(conn, charges, writer)
            reversed_, deferred = await self._reverse(conn, reversals, writer)
            if deferred:
                await conn.execute(
                    "DELETE FROM processed_events WHERE consumer = $1 AND event_id = ANY($2::text[])",
                    CONSUMER, list(deferred),
                )  # fmt: skip
            if writer.entries:
                await conn.copy_records_to_table("ledger", records=writer.entries, columns=_LEDGER_COLUMNS)
                await conn.copy_records_to_table("outbox", records=writer.events, columns=OUTBOX_COLUMNS)
            await conn.execute("UPDATE heads SET ledger = $1, outbox = $2 WHERE id = 1", writer.entry, writer.position)
        return Applied(charged, reversed_, len(ids) - len(fresh), deferred)

    async def _charge(self, conn: asyncpg.Connection, charges: Sequence[Charge], writer: _Writer) -> int:
        if not charges:
            return 0
        now = dt.datetime.now(dt.UTC)
        rows = []
        for c in charges:
            message = c.commission
            registered = date_from_proto(message.registration_date)
            rows.append((
                message.name.removeprefix("commissions/"), message.broker, message.buyer_id, registered, c.category,
                "CHARGED", message.SerializeToString(), now,
            ))  # fmt: skip
        inserted = {
            r["invoice_id"]
            for r in await conn.fetch(
                "INSERT INTO commissions (invoice_id, broker, buyer_id, registration_date, category, state, "
                "commission, create_time) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], "
                "$5::text[], $6::text[], $7::bytea[], $8::timestamptz[]) ON CONFLICT DO NOTHING RETURNING invoice_id",
                *map(list, zip(*rows, strict=True)),
            )
        }
        for c, row in zip(charges, rows, strict=True):
            if row[0] not in inserted:
                continue  # the invoice was charged under another event id: never twice
            b = c.commission.breakdown
            writer.entry_for(
                row[0], "CHARGE", period_of(row[3]), c.commission.broker, c.commission.buyer_id, c.category,
                1, Decimal(b.base), Decimal(b.commission), Decimal(b.vat), Decimal(b.total),
                b.tariff_schedule.removeprefix("tariffSchedules/"), c.event_id,
            )  # fmt: skip
            writer.event_for(
                row[0], 1, "CommissionCalculated", c.commission.broker, c.trace_id, now,
                {
                    "invoice": c.commission.invoice, "commission": c.commission.name, "broker": c.commission.broker,
                    "buyer_id": c.commission.buyer_id, "base": b.base, "commission_amount": b.commission,
                    "vat": b.vat, "total": b.total, "tariff_schedule": b.tariff_schedule,
                    "registration_date": row[3].isoformat(),
                },
            )  # fmt: skip
        return len(inserted)

    async def _reverse(
        self, conn: asyncpg.Connection, reversals: Sequence[Reversal], writer: _Writer
    ) -> tuple[int, list[str]]:
        if not reversals:
            return 0, []
        ids = [r.invoice_id for r in reversals]
        updated = {
            r["invoice_id"]
            for r in await conn.fetch(
                "UPDATE commissions c SET state = 'REVERSED', reverse_time = t.at FROM unnest($1::text[], "
                "$2::timestamptz[]) AS t(id, at) WHERE c.invoice_id = t.id AND c.state = 'CHARGED' "
                "RETURNING c.invoice_id",
                ids,
                [r.time for r in reversals],
            )
        }
        charges = {
            r["invoice_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM ledger WHERE kind = 'CHARGE' AND invoice_id = ANY($1::text[])", list(updated)
            )
        }
        known = {
            r["invoice_id"]
            for r in await conn.fetch("SELECT invoice_id FROM commissions WHERE invoice_id = ANY($1::text[])", ids)
        }
        deferred = [r.event_id for r in reversals if r.invoice_id not in known]
        for r in reversals:
            charge = charges.get(r.invoice_id)
            if r.invoice_id not in updated or charge is None:
                continue  # already reversed, or not charged yet (deferred)
            # The reversal belongs to the charge's period; if that one is closed it
            # lands in the next open period, as an adjustment.
            writer.entry_for(
                r.invoice_id, "REVERSAL", charge["natural_period"], charge["broker"], charge["buyer_id"],
                charge["category"], -1, -charge["base"], -charge["commission"], -charge["vat"], -charge["total"],
                charge["schedule_id"], r.event_id,
            )  # fmt: skip
            writer.event_for(
                r.invoice_id, 2, "CommissionReversed", charge["broker"], r.trace_id, r.time,
                {
                    "invoice": f"invoices/{r.invoice_id}", "commission": f"commissions/{r.invoice_id}",
                    "broker": charge["broker"], "commission_amount": str(-charge["commission"]),
                    "vat": str(-charge["vat"]), "total": str(-charge["total"]),
                },
            )  # fmt: skip
        return len(updated), deferred

    @staticmethod
    def _commission(row: asyncpg.Record) -> commission_pb2.Commission:
        message = commission_pb2.Commission.FromString(row["commission"])
        message.state = commission_pb2.CommissionState.Value(f"COMMISSION_STATE_{row['state']}")
        message.create_time.FromDatetime(row["create_time"])
        if row["reverse_time"] is not None:
            message.reverse_time.FromDatetime(row["reverse_time"])
        return message

    async def get_commission(self, invoice_id: str, broker: str = "") -> commission_pb2.Commission | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM commissions WHERE invoice_id = $1 AND ($2 = '' OR broker = $2)", invoice_id, broker
            )
        return self._commission(row) if row else None

    async def list_commissions(
        self, size: int, after: Sequence[Any] | None, broker: str, period: str, invoice_id: str
    ) -> list[tuple[commission_pb2.Commission, tuple[dt.datetime, str]]]:
        """Newest first, with each one's keyset."""
        sql = Where()
        if broker:
            sql.add("broker = ?", broker)
        if invoice_id:
            sql.add("invoice_id = ?", invoice_id)
        if period:
            first = dt.date(int(period[:4]), int(period[5:7]), 1)
            sql.add("registration_date >= ? AND registration_date < ?", first, period_end(period))
        if after is not None:
            sql.add("(create_time, invoice_id) < (?, ?)", *after)
        rows = await self.select(
            sql, "SELECT * FROM commissions", f"ORDER BY create_time DESC, invoice_id DESC LIMIT {sql.bind(size)}"
        )
        return [(self._commission(r), (r["create_time"], r["invoice_id"])) for r in rows]

    # ------------------------------------------------------------ periods and settlements

    async def closed_periods(self) -> set[str]:
        async with self.pool.acquire() as conn:
            return {r["period"] for r in await conn.fetch("SELECT period FROM closed_periods")}

    async def close_period(self, period: str, who: str) -> bool:
        """Closes `period`; False if it already was. Waits for ledger writers in flight."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CLOSE_LOCK)
            closed = await conn.fetchval(
                "INSERT INTO closed_periods VALUES ($1, now(), $2) ON CONFLICT DO NOTHING RETURNING 1", period, who
            )
        return closed is not None

    async def compute_settlement(self, period: str, broker: str) -> Settlement:
        """The settlement of `period` (one broker, or all when empty),
        aggregated by PostgreSQL in one pass over the period's entries."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            last = int(await conn.fetchval("SELECT ledger FROM heads WHERE id = 1"))
            rows = await conn.fetch(_SETTLEMENT_QUERY, period, broker, last)
            schedules = [
                r["schedule_id"]
                for r in await conn.fetch(
                    "SELECT DISTINCT schedule_id FROM ledger WHERE period = $1 AND ($2 = '' OR broker = $2) "
                    "AND entry <= $3 ORDER BY 1",
                    period,
                    broker,
                    last,
                )
            ]
        by: dict[str, list[Totals]] = {"broker": [], "buyer_id": [], "category": []}
        reversals, adjustments, total = Totals("reversals"), Totals("adjustments"), Totals("total")
        late_by_kind: list[Totals] = []
        for r in rows:
            totals = Totals("", int(r["n"]), r["base"], r["commission"], r["vat"], r["total"])
            grouping = r["grouping"]
            if grouping == "all":
                total = _keyed(totals, "total")
            elif grouping == "kind" and r["late"]:
                late_by_kind.append(totals)
            elif grouping == "kind" and r["kind"] == "REVERSAL":
                reversals = _keyed(totals, "reversals")
            elif grouping in by and not r["late"]:
                by[grouping].append(_keyed(totals, str(r[grouping])))
        if late_by_kind:
            adjustments = _keyed(_sum(late_by_kind), "adjustments")
        return Settlement(
            period, broker, by["broker"], by["buyer_id"], by["category"], reversals, adjustments, total, schedules, last
        )

    async def save_settlement(
        self, settlement_id: str, message: commission_pb2.Settlement, last_entry: int
    ) -> commission_pb2.Settlement:
        """Stores a settlement, replacing a draft; a closed one is never
        replaced (the stored one is returned)."""
        now = dt.datetime.now(dt.UTC)
        message.create_time.FromDatetime(now)
        state = commission_pb2.SettlementState.Name(message.state).removeprefix("SETTLEMENT_STATE_")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO settlements VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET "
                "state = EXCLUDED.state, settlement = EXCLUDED.settlement, last_entry = EXCLUDED.last_entry, "
                "create_time = EXCLUDED.create_time WHERE settlements.state <> 'CLOSED' RETURNING settlement",
                settlement_id, message.period, message.broker, state, message.SerializeToString(), last_entry, now,
            )  # fmt: skip
            if row is None:
                row = await conn.fetchrow("SELECT settlement FROM settlements WHERE id = $1", settlement_id)
        assert row is not None
        return commission_pb2.Settlement.FromString(row["settlement"])

    async def get_settlement(self, settlement_id: str) -> tuple[commission_pb2.Settlement, int] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT settlement, last_entry FROM settlements WHERE id = $1", settlement_id)
        return (commission_pb2.Settlement.FromString(row["settlement"]), row["last_entry"]) if row else None

    async def list_settlements(
        self, size: int, after: Sequence[Any] | None, period: str, broker: str, all_brokers: bool
    ) -> list[tuple[commission_pb2.Settlement, tuple[str, str]]]:
        """Newest period first; a broker's own (`broker`), or any when `all_brokers`."""
        sql = Where()
        if period:
            sql.add("period = ?", period)
        if broker or not all_brokers:
            sql.add("broker = ?", broker)
        if after is not None:
            sql.add("(period, id) < (?, ?)", *after)
        rows = await self.select(
            sql,
            "SELECT id, period, settlement FROM settlements",
            f"ORDER BY period DESC, id DESC LIMIT {sql.bind(size)}",
        )
        return [(commission_pb2.Settlement.FromString(r["settlement"]), (r["period"], r["id"])) for r in rows]

    async def entries(self, period: str, broker: str, last_entry: int) -> AsyncIterator[tuple[Any, ...]]:
        """The ledger entries a settlement adds up, in entry order, streamed."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            async for r in conn.cursor(
                "SELECT entry, 'invoices/' || invoice_id, kind, natural_period, period, broker, buyer_id, category, "
                "base, commission, vat, total, 'tariffSchedules/' || schedule_id FROM ledger "
                "WHERE period = $1 AND ($2 = '' OR broker = $2) AND entry <= $3 ORDER BY entry",
                period, broker, last_entry, prefetch=5000,
            ):  # fmt: skip
                yield tuple(r)


def _keyed(totals: Totals, key: str) -> Totals:
    return Totals(key, totals.invoice_count, totals.base, totals.commission, totals.vat, totals.total)


def _sum(parts: Sequence[Totals]) -> Totals:
    return Totals(
        "",
        sum(p.invoice_count for p in parts),
        sum((p.base for p in parts), Decimal(0)),
        sum((p.commission for p in parts), Decimal(0)),
        sum((p.vat for p in parts), Decimal(0)),
        sum((p.total for p in parts), Decimal(0)),
    )


# `late`: the entry belongs to an earlier, closed period (an adjustment).
_SETTLEMENT_QUERY = """
SELECT CASE
         WHEN GROUPING(late) = 1 THEN 'all'
         WHEN GROUPING(kind) = 0 THEN 'kind'
         WHEN GROUPING(broker) = 0 THEN 'broker'
         WHEN GROUPING(buyer_id) = 0 THEN 'buyer_id'
         ELSE 'category'
       END AS grouping,
       late, kind, broker, buyer_id, category,
       coalesce(sum(sign), 0) AS n, coalesce(sum(base), 0) AS base, coalesce(sum(commission), 0) AS commission,
       coalesce(sum(vat), 0) AS vat, coalesce(sum(total), 0) AS total
FROM (SELECT natural_period <> period AS late, * FROM ledger
      WHERE period = $1 AND ($2 = '' OR broker = $2) AND entry <= $3) AS e
GROUP BY GROUPING SETS ((late, broker), (late, buyer_id), (late, category), (late, kind), ())
"""

_LEDGER_COLUMNS = [
    "entry", "invoice_id", "kind", "natural_period", "period", "broker", "buyer_id", "category", "sign",
    "base", "commission", "vat", "total", "schedule_id", "event_id",
]  # fmt: skip


class _Writer:
    """Numbers ledger entries and outbox events of one transaction in order."""

    def __init__(self, entry: int, position: int, closed: set[str]) -> None:
        self.entry, self.position, self._closed = entry, position, closed
        self.entries: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []

    def entry_for(self, invoice_id: str, kind: str, natural: str, *rest: Any) -> None:
        self.entry += 1
        self.entries.append((self.entry, invoice_id, kind, natural, booking_period(natural, self._closed), *rest))

    def event_for(
        self, stream_id: str, version: int, type_: str, tenant: str, trace_id: str, at: dt.datetime,
        data: Mapping[str, Any],
    ) -> None:  # fmt: skip
        self.position += 1
        self.events.append(
            (self.position, uuid.uuid4(), stream_id, version, type_, tenant, trace_id, orjson.dumps(data).decode(), at)
        )
