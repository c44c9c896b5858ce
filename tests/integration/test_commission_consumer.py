"""The commission consumer against a real database, in-process: events out
of order (an annulment before its registration) are retried, not lost, and
nothing is applied twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.commission import reference
from services.commission.consumer import CommissionConsumer, EventsNotApplied
from services.commission.domain import period_of
from services.commission.store import CommissionStore
from services.dian import calendar
from services.dian.calendar import local_date
from tests.conftest import Platform
from tests.integration.database import fresh_database
from tests.integration.test_commission import _annulled, _registered


@asynccontextmanager
async def commission_database(platform: Platform) -> AsyncIterator[CommissionStore]:
    """A fresh, migrated and seeded commission database of its own, dropped afterwards."""
    async with fresh_database(platform.cluster, "commission") as database:
        store = CommissionStore(database)
        uvts = reference.uvt_values()
        latest, year = max(uvts, key=lambda u: u.year), calendar.today().year
        if year > latest.year:  # a year the shipped reference data does not reach: as the platform fixture does
            uvts.append(reference.UvtEntry(year, latest.value, f"provisional: {latest.year}'s value"))
        await store.seed(reference.schedules(), uvts)
        yield store


def consumer_of(store: CommissionStore) -> CommissionConsumer:
    rules = reference.withholding_rules()
    return CommissionConsumer(store, lambda: store.book(rules))


def test_an_annulment_before_its_registration_waits_for_it(platform: Platform) -> None:
    broker, now = "brokers/acme", dt.datetime.now(dt.UTC)
    registered = _registered(broker, now)
    annulled = _annulled(registered.stream_id, broker, now)

    async def scenario() -> tuple[str, ...]:
        async with commission_database(platform) as store:
            consumer = consumer_of(store)
            with pytest.raises(EventsNotApplied):
                await consumer.handle([annulled])  # its charge is not there yet: left for a retry
            before = await store.get_commission(registered.stream_id)
            await consumer.handle([registered])
            await consumer.handle([annulled])  # the retry
            await consumer.handle([registered, annulled])  # a redelivery of both changes nothing
            after = await store.get_commission(registered.stream_id)
            settlement = await store.compute_settlement(period_of(local_date(now)), broker)
            assert after is not None
            return (
                "absent" if before is None else "present",
                str(after.state),
                str(settlement.total.invoice_count),
                str(settlement.reversals.invoice_count),
            )

    assert asyncio.run(scenario()) == ("absent", "2", "0", "-1")


def test_a_settlement_adds_up_to_its_invoices_to_the_peso(platform: Platform) -> None:
    """Property: whatever the invoices' values, and whichever of them are
    annulled, the settlement computed in SQL equals the sum of the
    commissions the consumer charged (minus those reversed), to the peso."""
    values = st.lists(
        st.tuples(st.decimals(min_value=1, max_value=5_000_000_000, places=2), st.booleans()), min_size=1, max_size=25
    )

    async def scenario() -> None:
        async with commission_database(platform) as store:
            consumer = consumer_of(store)
            loop = asyncio.get_running_loop()

            # Hypothesis drives from a worker thread; each example runs on this loop (the pool's).
            @settings(max_examples=15, deadline=None)
            @given(values)
            def check(invoices: list[tuple[Decimal, bool]]) -> None:
                asyncio.run_coroutine_threadsafe(one(invoices), loop).result()

            async def one(invoices: list[tuple[Decimal, bool]]) -> None:
                broker, now = f"brokers/p{uuid.uuid4().hex[:10]}", dt.datetime.now(dt.UTC)
                registered = [_registered(broker, now, str(amount)) for amount, _ in invoices]
                await consumer.handle(registered)
                await consumer.handle(
                    [
                        _annulled(e.stream_id, broker, now)
                        for e, (_, gone) in zip(registered, invoices, strict=True)
                        if gone
                    ]
                )
                charged = [await store.get_commission(e.stream_id) for e in registered]
                kept = [c for c, (_, gone) in zip(charged, invoices, strict=True) if c is not None and not gone]
                settlement = await store.compute_settlement(period_of(local_date(now)), broker)
                assert settlement.total.total == sum((Decimal(c.breakdown.total) for c in kept), Decimal(0))
                assert settlement.total.commission == sum((Decimal(c.breakdown.commission) for c in kept), Decimal(0))
                assert settlement.total.invoice_count == len(kept)
                assert sum((t.total for t in settlement.by_category), Decimal(0)) == settlement.total.total

            await loop.run_in_executor(None, check)

    asyncio.run(scenario())
