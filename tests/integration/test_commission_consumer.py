"""The commission consumer against a real database, in-process: events out
of order (an annulment before its registration) are retried, not lost, and
nothing is applied twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest

from services.commission import reference
from services.commission.consumer import CommissionConsumer, EventsNotApplied
from services.commission.domain import period_of
from services.commission.store import CommissionStore
from services.dian.calendar import local_date
from services.kit.database import drop_database, open_database
from tests.conftest import Platform, make_settings
from tests.integration.test_commission import _annulled, _registered

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "commission" / "migrations"


def test_an_annulment_before_its_registration_waits_for_it(platform: Platform, tmp_path: Path) -> None:
    assert platform.cluster.infrastructure is not None
    url = platform.cluster.infrastructure.database_url
    settings = make_settings(tmp_path, "embedded", db_prefix=f"bmcc{uuid.uuid4().hex[:8]}_")
    broker, now = "brokers/acme", dt.datetime.now(dt.UTC)
    registered = _registered(broker, now)
    annulled = _annulled(registered.stream_id, broker, now)

    async def scenario() -> tuple[str, ...]:
        engine = await open_database(settings, url, "commission", MIGRATIONS)
        store = CommissionStore(engine)
        await store.open()
        try:
            await store.seed(reference.schedules(), reference.uvt_values())
            rules = reference.withholding_rules()
            consumer = CommissionConsumer(store, lambda: store.book(rules))
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
        finally:
            await store.close()
            await engine.dispose()
            await drop_database(url, f"{settings.db_prefix}commission")

    assert asyncio.run(scenario()) == ("absent", "2", "0", "-1")
