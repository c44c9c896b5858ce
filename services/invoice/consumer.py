"""What the invoice service does with other services' events: a calculated
commission marks the registration COMMISSIONED, an issued certificate marks
it CERTIFIED. Each is recorded in the invoice's history whatever the order
they arrive in (the state only moves forward; an annulled invoice stays
annulled). Idempotent: redelivered events change nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from services.invoice.store import EventMeta, InvoiceStore
from services.kit.envelopes import Event
from services.kit.errors import FailedPrecondition, NotFound

log = structlog.get_logger("bmc.invoice.consumer")
CONSUMER = "invoice"
APPLIES = {"CommissionCalculated": "CommissionCalculated", "CertificateIssued": "InvoiceCertified"}


# What each reported step is about: one step per commission, per certificate.
SUBJECTS = {"CommissionCalculated": "commission", "CertificateIssued": "certificate"}


def step_keys(event_type: str, event_id: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The idempotency keys of a reported step: its event, and the fact it
    reports (which the reconciliation may have recorded first)."""
    keys = [(f"{CONSUMER}:{event_type}", event_id)] if event_id else []
    subject = str(data.get(SUBJECTS.get(event_type, ""), ""))
    if subject:
        keys.append((f"{CONSUMER}:step", subject))
    return keys


class LifecycleConsumer:
    def __init__(self, store: InvoiceStore) -> None:
        self._store = store

    async def handle(self, event: Event) -> None:
        own_event = APPLIES.get(event.type)
        invoice = str(event.data.get("invoice", ""))
        if own_event is None or not invoice.startswith("invoices/"):
            return  # not about an invoice's lifecycle
        data = {"source_event": event.event_id}
        if event.type == "CertificateIssued":
            data["certificate"] = str(event.data.get("certificate", ""))
        meta = EventMeta(actor=f"event:{event.type}", tenant=event.tenant, trace_id=event.trace_id)
        try:
            await self._store.transition(
                invoice.removeprefix("invoices/"),
                own_event,
                data,
                meta,
                applying=step_keys(event.type, event.event_id, event.data),
            )
        except (NotFound, FailedPrecondition) as exc:
            # An unknown invoice cannot record it; the event is acknowledged, not retried forever.
            log.warning("event not applied", event_id=event.event_id, type=event.type, reason=exc.reason)
