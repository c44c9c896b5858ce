"""Issuing an invoice certificate: gather what it certifies (the invoice
service, the commission service), number it, render and sign it in a pool
of processes (reportlab and pyHanko are CPU-bound), store the file by its
SHA-256 and record it with its `CertificateIssued` event."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import secrets
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from decimal import Decimal

from bmc.certificate.v1 import certificate_pb2
from bmc.commission.v1 import commission_service_pb2
from bmc.common.v1 import party_pb2, tax_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.certificate.domain import (
    InvoiceFacts,
    LineFacts,
    OperationFacts,
    PartyFacts,
    PeriodicFacts,
    certificate_number,
    period_bounds,
    periodic_subject,
    verification_code,
)
from services.certificate.render import CertificateSheet, render
from services.certificate.sealing import Sealer, SigningKey
from services.certificate.store import CertificateStore, NewCertificate
from services.dian.calendar import COLOMBIA, local_date
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.metrics import CERTIFICATES_ISSUED
from services.kit.objects import object_store
from services.kit.pki import DevPki
from services.kit.service_clients import ServiceClient
from services.kit.settings import Settings
from services.kit.workers import die_with_parent

ID_TYPES = {party_pb2.IDENTIFICATION_TYPE_NIT: "NIT", party_pb2.IDENTIFICATION_TYPE_CITIZENSHIP_CARD: "CC"}
_sealer: Sealer | None = None


def signing_key(settings: Settings) -> SigningKey:
    """The configured key, or the development one (issued by the dev CA)."""
    if settings.certificate_signing_cert and settings.certificate_signing_key:
        chain = (settings.certificate_signing_chain,) if settings.certificate_signing_chain else ()
        return SigningKey(settings.certificate_signing_cert, settings.certificate_signing_key, chain)
    pki = DevPki.signing(settings)
    pki.identity("document-signer", "Bolsa Mercantil de Colombia S.A.")
    directory = pki.directory
    return SigningKey(directory / "document-signer.pem", directory / "document-signer-key.pem", (pki.ca_path,))


def _ready() -> None:
    """A task that only proves a render process has started."""


def _start_worker(key: SigningKey) -> None:
    global _sealer
    die_with_parent()  # a killed service leaves no renderer behind
    _sealer = Sealer(key)


def render_and_sign(sheet: CertificateSheet) -> bytes:
    """In a worker process: the signed PDF of `sheet`."""
    assert _sealer is not None, "worker not initialised"
    return _sealer.sign(render(sheet), sheet.number, sheet.facts.summary)


def _party(party: party_pb2.Party) -> PartyFacts:
    return PartyFacts(party.legal_name, ID_TYPES.get(party.id.type, "ID"), party.id.number, party.id.check_digit)


def facts_of(invoice: invoice_pb2.Invoice, commission_total: Decimal) -> InvoiceFacts:
    totals = invoice.totals
    subtotal = Decimal(totals.line_extension_amount or "0")
    total = Decimal(totals.payable_amount or "0")
    vat = sum((Decimal(t.tax_amount or "0") for t in invoice.taxes if t.scheme == tax_pb2.TAX_SCHEME_IVA), Decimal(0))
    return InvoiceFacts(
        invoice=invoice.name,
        broker=invoice.broker,
        number=invoice.number,
        cufe=invoice.cufe,
        issue_date=dt.date(invoice.issue_date.year, invoice.issue_date.month, invoice.issue_date.day),
        registration_number=invoice.registration_number,
        registration_time=invoice.register_time.ToDatetime(dt.UTC),
        seller=_party(invoice.seller),
        buyer=_party(invoice.buyer),
        subtotal=subtotal,
        vat=vat,
        total=total,
        lines=[
            LineFacts(
                line.line_number,
                line.product_code,
                line.description,
                Decimal(line.quantity or "0"),
                line.unit_code,
                Decimal(line.line_extension_amount or "0"),
            )
            for line in invoice.lines
        ],
        commission=commission_total,
    )


class Issuer:
    def __init__(
        self,
        settings: Settings,
        store: CertificateStore,
        invoices: ServiceClient,
        commissions: ServiceClient,
    ) -> None:
        self._settings, self._store = settings, store
        self._invoices, self._commissions = invoices, commissions
        self.objects = object_store(settings, "certificates/")
        self._key = signing_key(settings)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Spawned, not forked: a fork of a process running gRPC threads is not safe.
        return ProcessPoolExecutor(
            self._settings.certificate_renderers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._key,),
        )

    async def warm(self) -> None:
        """Starts the render processes now rather than at the first certificate."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self._settings.certificate_renderers))
        )

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

    async def _render_and_sign(self, sheet: CertificateSheet) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, render_and_sign, sheet)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start a fresh pool and try once more.
            self._pool = self._new_pool()
            return await loop.run_in_executor(self._pool, render_and_sign, sheet)

    async def invoice(self, name: str) -> invoice_pb2.Invoice:
        found: invoice_pb2.Invoice = await self._invoices.call(
            self._invoices.stub.GetInvoice, invoice_service_pb2.GetInvoiceRequest(name=name)
        )
        return found

    async def commission_total(self, invoice_name: str) -> Decimal:
        request = commission_service_pb2.GetCommissionRequest(name=invoice_name.replace("invoices/", "commissions/"))
        try:
            found = await self._commissions.call(self._commissions.stub.GetCommission, request)
        except NotFound as exc:
            raise FailedPrecondition(
                f"the commission of {invoice_name} is not computed yet; the certificate is issued once it is",
                reason="COMMISSION_PENDING",
            ) from exc
        return Decimal(found.breakdown.total)

    async def issue_for_invoice(
        self,
        invoice: invoice_pb2.Invoice,
        commission: Decimal,
        *,
        reissue: bool = False,
        applying: str = "",
        trace_id: str = "",
    ) -> tuple[certificate_pb2.Certificate, bool]:
        """The invoice's valid certificate (False), or a new one (True)."""
        subject = invoice.name
        existing = await self._store.valid_for(subject)
        if existing is not None and not reissue:
            return existing, False
        if invoice.state == invoice_pb2.INVOICE_STATE_ANNULLED:
            raise FailedPrecondition(f"{invoice.name} is annulled: no certificate", reason="INVOICE_ANNULLED")
        template = certificate_pb2.Certificate(
            kind=certificate_pb2.CERTIFICATE_KIND_INVOICE,
            invoice=invoice.name,
            buyer=invoice.buyer,
            broker=invoice.broker,
        )
        certified = certificate_pb2.CertifiedFacts(
            invoice_number=invoice.number,
            cufe=invoice.cufe,
            buyer=invoice.buyer,
            seller=invoice.seller,
            registration_number=invoice.registration_number,
        )
        return await self._issue(
            facts_of(invoice, commission), template, certified, subject, existing, applying=applying, trace_id=trace_id
        )

    async def issue_periodic(
        self, buyer_id: str, year: int, month: int, broker: str, *, reissue: bool = False, trace_id: str = ""
    ) -> tuple[certificate_pb2.Certificate, bool]:
        """The certificate of every operation of a buyer registered in a month
        (or a year, `month` 0) through `broker` (all brokers when empty)."""
        subject = periodic_subject(broker, buyer_id, year, month)
        existing = await self._store.valid_for(subject)
        if existing is not None and not reissue:
            return existing, False
        registered = await self._registered(buyer_id, year, month, broker)
        if not registered:
            raise FailedPrecondition(
                f"buyer {buyer_id} has no registered operations in {year}-{month:02d}" if month else f"in {year}",
                reason="NO_OPERATIONS",
            )
        limit = asyncio.Semaphore(16)

        async def commission_of(name: str) -> Decimal:
            async with limit:
                try:
                    return await self.commission_total(name)
                except FailedPrecondition:
                    return Decimal(0)  # not charged yet: the certificate shows none

        commissions = await asyncio.gather(*(commission_of(i.name) for i in registered))
        buyer = registered[0].buyer
        facts = PeriodicFacts(
            broker,
            _party(buyer),
            year,
            month,
            [
                OperationFacts(
                    i.number,
                    dt.date(i.issue_date.year, i.issue_date.month, i.issue_date.day),
                    _party(i.seller),
                    i.registration_number,
                    local_date(i.register_time.ToDatetime(dt.UTC)),
                    Decimal(i.totals.payable_amount or "0"),
                    commission,
                )
                for i, commission in zip(registered, commissions, strict=True)
            ],
        )
        template = certificate_pb2.Certificate(
            kind=certificate_pb2.CERTIFICATE_KIND_PERIODIC,
            buyer=buyer,
            broker=broker,
            period=certificate_pb2.CertificatePeriod(year=year, month=month),
        )
        certified = certificate_pb2.CertifiedFacts(buyer=buyer)
        return await self._issue(facts, template, certified, subject, existing, trace_id=trace_id)

    async def _registered(self, buyer_id: str, year: int, month: int, broker: str) -> list[invoice_pb2.Invoice]:
        """The buyer's invoices registered in the period (Colombian dates), annulled ones left out."""
        first, after = period_bounds(year, month)
        request = invoice_service_pb2.ListInvoicesRequest(page_size=1000, buyer_id=buyer_id, broker=broker)
        request.register_time_from.FromDatetime(dt.datetime.combine(first, dt.time(), COLOMBIA).astimezone(dt.UTC))
        request.register_time_to.FromDatetime(dt.datetime.combine(after, dt.time(), COLOMBIA).astimezone(dt.UTC))
        found: list[invoice_pb2.Invoice] = []
        while True:
            page = await self._invoices.call(self._invoices.stub.ListInvoices, request)
            found += [i for i in page.invoices if i.state != invoice_pb2.INVOICE_STATE_ANNULLED]
            if not page.next_page_token:
                return sorted(found, key=lambda i: i.registration_number)
            request.page_token = page.next_page_token

    async def _issue(
        self,
        facts: InvoiceFacts | PeriodicFacts,
        template: certificate_pb2.Certificate,
        certified: certificate_pb2.CertifiedFacts,
        subject: str,
        existing: certificate_pb2.Certificate | None,
        *,
        applying: str = "",
        trace_id: str = "",
    ) -> tuple[certificate_pb2.Certificate, bool]:
        """Numbers, renders, signs and stores a certificate, then records it."""
        now = dt.datetime.now(dt.UTC)
        number = certificate_number(now.year, await self._store.next_number(now.year))
        code = verification_code(secrets.token_bytes(8))
        sheet = CertificateSheet(
            number, now, code, f"{self._settings.verify_url}{code}", facts,
            self._settings.certificate_page_size,
        )  # fmt: skip
        pdf = await self._render_and_sign(sheet)
        digest = await asyncio.to_thread(self.objects.put, pdf)
        message = certificate_pb2.Certificate(
            name=f"certificates/{uuid.uuid4().hex}",
            number=number,
            verification_code=code,
            sha256=digest,
            size_bytes=len(pdf),
            verification_url=sheet.verification_url,
        )
        message.MergeFrom(template)
        message.issue_time.FromDatetime(now)
        certified.MergeFrom(
            certificate_pb2.CertifiedFacts(
                number=number, kind=message.kind, issue_time=message.issue_time, total_amount=str(facts.total),
                sha256=digest,
            )
        )  # fmt: skip
        new = NewCertificate(message, certified, subject, message.buyer.id.number)
        stored, created = await self._store.insert(new, existing.name if existing else "", applying, trace_id)
        if created:
            CERTIFICATES_ISSUED.inc()
        return stored, created
