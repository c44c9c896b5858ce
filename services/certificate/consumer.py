"""What the certificate service does with the commission service's events:
a calculated commission gets its invoice certified. Redelivered events
never produce a second certificate (applied once by event id, and one valid
certificate per invoice)."""

from __future__ import annotations

from decimal import Decimal

import structlog

from services.certificate.issuing import Issuer
from services.kit.envelopes import Event
from services.kit.errors import FailedPrecondition, NotFound

log = structlog.get_logger("bmc.certificate.consumer")


class CertificateConsumer:
    def __init__(self, issuer: Issuer) -> None:
        self._issuer = issuer

    async def handle(self, event: Event) -> None:
        if event.type != "CommissionCalculated":
            return
        name = str(event.data.get("invoice", ""))
        try:
            invoice = await self._issuer.invoice(name)
            certificate, created = await self._issuer.issue_for_invoice(
                invoice, Decimal(str(event.data.get("total", "0"))), applying=event.event_id, trace_id=event.trace_id
            )
        except (NotFound, FailedPrecondition) as exc:
            # An unknown or annulled invoice gets no certificate; the event is done with, not retried.
            log.warning("no certificate", event_id=event.event_id, invoice=name, reason=exc.reason)
            return
        if created:
            log.info("certificate issued", certificate=certificate.name, number=certificate.number, invoice=name)
