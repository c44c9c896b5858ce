"""The invoice's lifecycle against a real database: steps other services
report are recorded whatever the order they arrive in."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid

import pytest

from services.invoice.consumer import LifecycleConsumer
from services.invoice.domain import State
from services.invoice.store import EventMeta, InvoiceStore, NewInvoice
from services.kit.envelopes import Event
from tests.conftest import Platform
from tests.integration.database import fresh_database

STEPS = {
    "CommissionCalculated": lambda invoice: {
        "invoice": invoice,
        "commission": invoice.replace("invoices", "commissions"),
    },
    "CertificateIssued": lambda invoice: {"invoice": invoice, "certificate": f"certificates/{uuid.uuid4().hex}"},
}


def _new(n: int) -> NewInvoice:
    return NewInvoice(
        document_json="{}", document_pb=b"", number=f"SETP{n}", cufe=f"{n:096x}", seller_nit="900508908",
        buyer_id="860034313", issue_date=dt.date(2026, 11, 20), broker="brokers/acme",
    )  # fmt: skip


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_reported_steps_are_recorded_in_any_order(platform: Platform) -> None:
    """Every order of the commission and certificate steps (and each
    delivered twice): the history has each step once, and the invoice ends
    CERTIFIED with its certificate."""

    async def scenario() -> list[tuple[tuple[str, ...], list[str], State, str]]:
        outcomes = []
        async with fresh_database(platform.cluster, "invoice") as database:
            store = InvoiceStore(database)
            consumer = LifecycleConsumer(store)
            orders = list(itertools.permutations(STEPS))
            registered = await store.register_many(
                [(_new(n), EventMeta("tester", "brokers/acme")) for n in range(len(orders))]
            )
            for order, outcome in zip(orders, registered, strict=True):
                assert isinstance(outcome, tuple)
                name = f"invoices/{outcome[0].id}"
                events = [
                    Event(str(uuid.uuid4()), kind, name, 1, 0, "brokers/acme", "", STEPS[kind](name)) for kind in order
                ]
                for event in events + events:  # each delivered twice
                    await consumer.handle(event)
                history = [e.type for e, _ in await store.events(100, None, outcome[0].id)]
                row = await store.get(outcome[0].id)
                assert row is not None
                certificate = next(e.data["certificate"] for e in events if e.type == "CertificateIssued")
                outcomes.append((order, history, row.state, str(certificate == row.certificate)))
        return outcomes

    for order, history, state, certificate_kept in asyncio.run(scenario()):
        steps = ["CommissionCalculated" if kind == "CommissionCalculated" else "InvoiceCertified" for kind in order]
        assert history == ["InvoiceRegistered", *steps], order
        assert state is State.CERTIFIED, order
        assert certificate_kept == "True", order
