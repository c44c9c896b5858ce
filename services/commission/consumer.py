"""What the commission service does with the invoice service's events: a
registration is charged its commission, an annulment reverses it. Each
batch of events is applied in one transaction, each event once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from bmc.commission.v1 import commission_pb2
from services.commission.conversion import breakdown_to_proto, date_to_proto, withholding_to_proto
from services.commission.domain import OperationLine, TariffBook, TariffError, dominant
from services.commission.store import Charge, CommissionStore, Reversal
from services.dian.calendar import local_date
from services.kit.dead_letters import NotYet
from services.kit.envelopes import Event

log = structlog.get_logger("bmc.commission.consumer")


class EventsNotApplied(Exception):
    """Some events of a batch could not be applied; the batch stays pending
    and is delivered again (those applied are not applied twice)."""


class ReversalsBeforeCharges(EventsNotApplied, NotYet):
    """Annulments arrived before the registrations they annul."""


def operation_lines(data: Mapping[str, Any]) -> list[OperationLine]:
    """The lines of a registered invoice with their catalog facts, as the event carries them."""
    products: Mapping[str, Mapping[str, str]] = data.get("products") or {}
    lines = []
    for line in data["document"].get("lines", []):
        facts = products.get(line.get("product_code", ""), {})
        lines.append(
            OperationLine(
                Decimal(line.get("line_extension_amount") or "0"),
                facts.get("category", ""),
                facts.get("withholding_class", ""),
            )
        )
    return lines


def charge_for(event: Event, book: TariffBook) -> Charge:
    """The commission of the invoice an `InvoiceRegistered` event registered."""
    data = event.data
    document = data["document"]
    registered = local_date(event.occurred)
    lines = operation_lines(data)
    breakdown, withholding = book.price(lines, registered, str(document.get("operation_type", "")))
    commission = commission_pb2.Commission(
        name=f"commissions/{event.stream_id}",
        invoice=f"invoices/{event.stream_id}",
        broker=str(data.get("broker") or event.tenant),
        buyer_id=str(document.get("buyer", {}).get("id", {}).get("number", "")),
        registration_date=date_to_proto(registered),
        breakdown=breakdown_to_proto(breakdown),
        withholding=withholding_to_proto(withholding),
    )
    return Charge(event.event_id, event.trace_id, commission, dominant(lines, "category"))


class CommissionConsumer:
    def __init__(self, store: CommissionStore, book: Callable[[], Awaitable[TariffBook]]) -> None:
        self._store = store
        self._book = book  # read afresh for each batch: a new tariff version applies at once

    async def handle(self, events: Sequence[Event]) -> None:
        book = await self._book()
        charges, reversals, failed = [], [], []
        for event in events:
            if event.type == "InvoiceRegistered":
                try:
                    charges.append(charge_for(event, book))
                except (TariffError, KeyError, InvalidOperation) as exc:
                    log.error(
                        "commission not computed", event_id=event.event_id, invoice=event.stream_id, error=str(exc)
                    )
                    failed.append(event.event_id)
            elif event.type == "InvoiceAnnulled":
                reversals.append(Reversal(event.event_id, event.trace_id, event.stream_id, event.occurred))
        applied = await self._store.apply(charges, reversals)
        if applied.charged or applied.reversed:
            log.info(
                "commissions applied", charged=applied.charged, reversed=applied.reversed, repeated=applied.repeated
            )
        if failed:
            raise EventsNotApplied(f"{len(failed)} not computable: {', '.join(failed)}")
        if applied.deferred:
            raise ReversalsBeforeCharges(f"{len(applied.deferred)} reversals before their charge")
