"""The safety net under event delivery: registrations that have not reached
their commission and certificate within a bound are looked up in the other
services and repaired from the facts there.

For each registration behind:
- the commission service has its commission: the step is recorded here (if
  the event never came), else the registration is re-published from the
  event store for the commission service, which applies it once;
- the certificate service has its valid certificate: the step is recorded
  here, else the certificate is asked for (idempotent: one valid
  certificate per invoice).
A registration it cannot repair (a service unreachable, a commission the
other service refuses) is named with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2
from bmc.commission.v1 import commission_service_pb2
from services.invoice.consumer import step_keys
from services.invoice.domain import State
from services.invoice.store import EventMeta, InvoiceRow, InvoiceStore
from services.kit.background import cancel
from services.kit.envelopes import row_envelope
from services.kit.errors import NotFound, ServiceError
from services.kit.leadership import while_leader
from services.kit.service_clients import ServiceClient

log = structlog.get_logger("bmc.invoice.reconcile")
ACTOR = "reconciliation"


@dataclass
class Report:
    behind: int = 0
    steps_recorded: int = 0
    redriven: int = 0
    certificates_requested: int = 0
    unresolved: list[tuple[str, str, str]] = field(default_factory=list)  # (invoice, reason, detail)

    def counts(self) -> Mapping[str, int]:
        return {
            "behind": self.behind,
            "steps_recorded": self.steps_recorded,
            "redriven": self.redriven,
            "certificates_requested": self.certificates_requested,
            "unresolved": len(self.unresolved),
        }


class Reconciler:
    def __init__(
        self,
        store: InvoiceStore,
        redis: aioredis.Redis,
        stream: str,
        commissions: ServiceClient,
        certificates: ServiceClient,
    ) -> None:
        self._store, self._redis, self._stream = store, redis, stream
        self._commissions, self._certificates = commissions, certificates
        self._task: asyncio.Task[None] | None = None

    async def run(self, older_than: dt.timedelta, limit: int, repair: bool = True) -> Report:
        report = Report()
        for row in await self._store.behind(older_than, limit):
            report.behind += 1
            try:
                await self._reconcile(row, repair, report)
            except ServiceError as exc:
                report.unresolved.append((f"invoices/{row.id}", exc.reason, exc.message))
        if report.behind:
            log.info("reconciled", **report.counts())
        return report

    async def _reconcile(self, row: InvoiceRow, repair: bool, report: Report) -> None:
        name = f"invoices/{row.id}"
        commission = await self._commission(row.id)
        if commission is None:
            if repair:
                await self._redrive(row)
            report.redriven += 1
            return
        if row.state is State.REGISTERED:
            if repair:
                data = {"commission": commission.name, "source_event": ACTOR}
                await self._record(row, "CommissionCalculated", data)
            report.steps_recorded += 1
        certificate = await self._certificate(name)
        if certificate is not None:
            if repair:
                await self._record(row, "InvoiceCertified", {"certificate": certificate, "source_event": ACTOR})
            report.steps_recorded += 1
            return
        if repair:
            await self._certificates.call(
                self._certificates.stub.IssueCertificate,
                certificate_service_pb2.IssueCertificateRequest(invoice=name, request_id=f"reconcile-{row.id}"[:64]),
            )
        report.certificates_requested += 1

    async def _commission(self, invoice_id: str) -> Any:
        try:
            return await self._commissions.call(
                self._commissions.stub.GetCommission,
                commission_service_pb2.GetCommissionRequest(name=f"commissions/{invoice_id}"),
            )
        except NotFound:
            return None

    async def _certificate(self, invoice: str) -> str | None:
        found = await self._certificates.call(
            self._certificates.stub.ListCertificates,
            certificate_service_pb2.ListCertificatesRequest(
                invoice=invoice, state=certificate_pb2.CERTIFICATE_STATE_VALID, page_size=1
            ),
        )
        return found.certificates[0].name if found.certificates else None

    async def _record(self, row: InvoiceRow, step: str, data: Mapping[str, str]) -> None:
        """Records a step another service took, once (the keys its event would use)."""
        event_type = "CertificateIssued" if step == "InvoiceCertified" else step
        meta = EventMeta(actor=ACTOR, tenant=row.broker)
        await self._store.transition(row.id, step, data, meta, applying=step_keys(event_type, "", data))

    async def _redrive(self, row: InvoiceRow) -> None:
        """Publishes the registration again; the commission service applies it once."""
        event = await self._store.registration_event(row.id)
        if event is None:  # pragma: no cover - every registration starts its stream
            raise NotFound(f"invoices/{row.id} has no registration event", reason="NO_REGISTRATION_EVENT")
        await self._redis.xadd(self._stream, {"type": event["type"], "event": row_envelope(event)})

    def start(self, pool: Any, interval: float, older_than: dt.timedelta) -> None:
        """Runs every `interval` seconds on one worker of the service."""

        async def periodically(_leader: Any) -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.run(older_than, 1000)
                except Exception as exc:  # a dependency down: the next round tries again
                    log.warning("reconciliation failed", error=f"{type(exc).__name__}: {exc}")

        self._task = asyncio.create_task(while_leader(pool, "reconcile:invoice", periodically), name="reconcile")

    async def stop(self) -> None:
        await cancel(self._task)
