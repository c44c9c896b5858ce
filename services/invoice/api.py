"""The `InvoiceService` servicer: maps protos to the domain and the store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from google.longrunning import operations_pb2
from google.rpc import status_pb2

from bmc.common.v1 import tax_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from bmc.ocr.v1 import ocr_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.dian import calendar
from services.invoice import chain
from services.invoice.conversion import document_from_proto
from services.invoice.domain import InvoiceDocument, Issue, ProductFacts, RegistrationPolicy, product_codes, validate
from services.invoice.imports import InvoiceImporter
from services.invoice.ocr_review import unconfirmed
from services.invoice.reconcile import Reconciler
from services.invoice.store import EventMeta, InvoiceRow, InvoiceStore, ListFilter, NewInvoice
from services.kit.auth import acting_for, require_principal, tenant_scope
from services.kit.batching import MicroBatcher
from services.kit.database import Database
from services.kit.dead_letters import DeadLetterRpcs
from services.kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    to_status,
)
from services.kit.idempotency import RequestKeys, keyed, request_fingerprint
from services.kit.metrics import REGISTRATIONS
from services.kit.names import resource_id
from services.kit.operations import OperationRpcs, OperationStore
from services.kit.paging import INSTANT, INT, INT32, TEXT, list_page
from services.kit.protojson import to_dict
from services.kit.service_clients import ServiceClient
from services.kit.settings import Settings
from services.kit.telemetry import trace_context
from services.kit.tokens import Principal
from services.kit.workers import IsolatedPool

OPERATIONS = "invoiceOperations"


class Submission(NamedTuple):
    """One registration request, with who sent it and its trace context (the event's `trace_id`)."""

    request: invoice_service_pb2.RegisterInvoiceRequest
    principal: Principal
    trace: str


STATES = {
    s: invoice_pb2.InvoiceState.Name(s).removeprefix("INVOICE_STATE_") for s in invoice_pb2.InvoiceState.values() if s
}


def policy_from(settings: Settings) -> RegistrationPolicy:
    """The configured rules, read once; `today` is refreshed per registration."""
    keys: Mapping[str, str] = {}
    if settings.invoice_technical_keys:
        keys = json.loads(Path(settings.invoice_technical_keys).read_text())
    return RegistrationPolicy(
        today=calendar.today(),
        max_age_days=settings.invoice_max_age_days,
        same_or_previous_month=settings.invoice_same_or_previous_month,
        currencies=frozenset(c.strip() for c in settings.invoice_currencies.split(",") if c.strip()),
        technical_keys=keys,
    )


def rejection(issues: Sequence[Issue]) -> InvalidArgument:
    summary = "; ".join(f"{i.field}: {i.description}" for i in issues[:3])
    return InvalidArgument(
        f"invoice refused ({len(issues)} problem(s)): {summary}",
        reason="INVOICE_REJECTED",
        violations=[FieldViolation(f"invoice.{i.field}", i.description, i.reason) for i in issues],
    )


def to_proto(row: InvoiceRow, document: invoice_pb2.Invoice | None = None) -> invoice_pb2.Invoice:
    """The read model as the contract's message; `document` saves parsing the
    stored bytes when the caller still holds the submitted message."""
    invoice = invoice_pb2.Invoice()
    if document is not None:
        invoice.CopyFrom(document)
    else:
        invoice.ParseFromString(row.document)
    invoice.name = f"invoices/{row.id}"
    invoice.registration_number = row.registration_number
    invoice.broker = row.broker
    invoice.state = invoice_pb2.InvoiceState.Value(f"INVOICE_STATE_{row.state.value}")
    invoice.register_time.FromDatetime(row.register_time)
    invoice.update_time.FromDatetime(row.update_time)
    invoice.version = row.version
    invoice.etag = f'W/"{row.version}"'
    invoice.annulment_reason = row.annulment_reason
    invoice.certificate = row.certificate
    return invoice


class InvoiceApi(OperationRpcs, DeadLetterRpcs, invoice_service_pb2_grpc.InvoiceServiceServicer):
    """RPCs of `bmc.invoice.v1.InvoiceService`."""

    reconciler: Reconciler  # set when the service is wired (it needs the other services' clients)

    def operations_tenant(self) -> str:
        return tenant_scope(require_principal())

    def __init__(
        self,
        store: InvoiceStore,
        products: ServiceClient,
        settings: Settings,
        database: Database,
        readers: IsolatedPool,
        extractions: ServiceClient,
    ) -> None:
        self._store, self._products, self._extractions = store, products, extractions
        self._policy = policy_from(settings)
        self.operations = OperationStore(database.pool, OPERATIONS)
        self.request_keys = RequestKeys(database.pool)
        self._single: MicroBatcher[Submission, invoice_pb2.Invoice] = MicroBatcher(self._register_all)
        self.importer = InvoiceImporter(
            database,
            self.operations,
            lambda requests, principal: self._register_all([Submission(r, principal, "") for r in requests]),
            readers,
        )

    async def _product_facts(self, codes: Sequence[str]) -> dict[str, ProductFacts]:
        stub: product_service_pb2_grpc.ProductServiceAsyncStub = self._products.stub
        facts: dict[str, ProductFacts] = {}
        for start in range(0, len(codes), 1000):
            names = [f"products/{c}" for c in codes[start : start + 1000]]
            response: product_service_pb2.BatchGetProductsResponse = await self._products.call(
                stub.BatchGetProducts, product_service_pb2.BatchGetProductsRequest(names=names)
            )
            for product in response.products:
                active = product.state == product_pb2.PRODUCT_STATE_ACTIVE
                facts[product.code] = ProductFacts(
                    eligible=product.eligible,
                    active=active,
                    category=product_pb2.Category.Name(product.category),
                    withholding_class=tax_pb2.WithholdingClass.Name(product.withholding_class),
                )
        return facts

    def _broker_for(self, requested: str, principal: Principal, field: str) -> str:
        """The broker a registration is for: the caller's own, or the one an operator names."""
        broker = acting_for(principal, requested, "registers")
        if not broker:
            raise InvalidArgument(
                "operators must say which broker the invoice is registered for",
                reason="BROKER_REQUIRED",
                violations=[FieldViolation(field, "required for operators: brokers/{id}", "BROKER_REQUIRED")],
            )
        return broker

    async def _visible(self, name: str, field: str) -> InvoiceRow:
        """The invoice `name` if the caller may see it; NOT_FOUND otherwise (no leak of other tenants')."""
        row = await self._store.get(resource_id(name, "invoices", field), tenant_scope(require_principal()))
        if row is None:
            raise NotFound(f"invoice {name!r} not found", reason="INVOICE_NOT_FOUND", metadata={"name": name})
        return row

    async def _register_all(self, submissions: Sequence[Submission]) -> list[invoice_pb2.Invoice | ServiceError]:
        """Registers requests together: one catalog lookup for all their
        products, one policy, one database transaction. Each request gets its
        invoice or the error that refused it; one bad request spoils no other.

        The CPU-bound steps (reading and validating documents) run in a worker
        thread: the event loop, which may be holding the chain head for
        another batch, then gets the interpreter back within a switch
        interval instead of after a whole batch is validated."""
        outcomes: list[invoice_pb2.Invoice | ServiceError | None] = [None] * len(submissions)
        prepared = await asyncio.to_thread(self._documents, submissions, outcomes)
        prepared = await self._reviewed(submissions, prepared, outcomes)
        codes = list(dict.fromkeys(code for _, _, doc in prepared for code in product_codes(doc)))
        facts = await self._product_facts(codes) if codes else {}
        pending, items = await asyncio.to_thread(self._admissible, submissions, prepared, facts, outcomes)
        if items:
            stored = await self._store.register_many(items)
            for (index, submitted), outcome in zip(pending, stored, strict=True):
                if isinstance(outcome, ServiceError):
                    outcomes[index] = outcome
                else:
                    row, created = outcome
                    outcomes[index] = to_proto(row, submitted if created else None)
        answered = [outcome for outcome in outcomes if outcome is not None]
        for answer in answered:
            if isinstance(answer, ServiceError):
                REGISTRATIONS.labels("refused", answer.reason or answer.code.name).inc()
            else:
                REGISTRATIONS.labels("accepted", "").inc()
        return answered

    async def _reviewed(
        self,
        submissions: Sequence[Submission],
        prepared: list[tuple[int, str, InvoiceDocument]],
        outcomes: list[invoice_pb2.Invoice | ServiceError | None],
    ) -> list[tuple[int, str, InvoiceDocument]]:
        """The prepared documents, less the OCR drafts registered before a
        person confirmed what Tesseract read unchecked (their error in
        `outcomes`). `source_format` is output only, so a draft says it came
        from OCR by its `ocr_review`, as `bmc ocr --submit` always does."""
        kept = []
        for index, broker, document in prepared:
            invoice = submissions[index].request.invoice
            try:
                if invoice.HasField("ocr_review"):
                    await self._check_review(invoice, broker)
                kept.append((index, broker, document))
            except ServiceError as error:
                outcomes[index] = error
        return kept

    async def _check_review(self, invoice: invoice_pb2.Invoice, broker: str) -> None:
        """A draft read by OCR (its `ocr_review` names the extraction, which the
        contract requires) registers only if a person confirmed every key
        field the extraction left unchecked, and every key field changed."""
        name, field = invoice.ocr_review.extraction, "invoice.ocr_review.extraction"
        stub: ocr_service_pb2_grpc.OcrServiceAsyncStub = self._extractions.stub
        extraction: ocr_pb2.Extraction | None
        try:
            extraction = await self._extractions.call(
                stub.GetExtraction, ocr_service_pb2.GetExtractionRequest(name=name)
            )
        except NotFound:
            extraction = None
        if extraction is None or (extraction.broker and extraction.broker != broker):  # another broker's: unseen
            raise InvalidArgument(
                f"no extraction {name!r} for this broker",
                reason="EXTRACTION_NOT_FOUND",
                violations=[FieldViolation(field, "no such extraction for this broker", "EXTRACTION_NOT_FOUND")],
            )
        waiting = unconfirmed(
            invoice, extraction.draft, extraction.fields_to_confirm, invoice.ocr_review.confirmed_fields
        )
        if waiting:
            raise FailedPrecondition(
                f"read by OCR and not confirmed by a person: {', '.join(waiting)}; confirm or correct them and "
                "name them in ocr_review.confirmed_fields",
                reason="OCR_CONFIRMATION_REQUIRED",
                metadata={"fields": ",".join(waiting), "extraction": name},
            )

    def _documents(
        self, submissions: Sequence[Submission], outcomes: list[invoice_pb2.Invoice | ServiceError | None]
    ) -> list[tuple[int, str, InvoiceDocument]]:
        """(index, broker, document) of each request that reads as a document;
        the others get their error in `outcomes`."""
        prepared = []
        for index, (request, principal, _) in enumerate(submissions):
            try:
                broker = self._broker_for(request.invoice.broker, principal, "invoice.broker")
                prepared.append((index, broker, document_from_proto(request.invoice)))
            except ServiceError as error:
                outcomes[index] = error
        return prepared

    def _admissible(
        self,
        submissions: Sequence[Submission],
        prepared: Sequence[tuple[int, str, InvoiceDocument]],
        facts: Mapping[str, ProductFacts],
        outcomes: list[invoice_pb2.Invoice | ServiceError | None],
    ) -> tuple[list[tuple[int, invoice_pb2.Invoice]], list[tuple[NewInvoice, EventMeta]]]:
        """The documents that pass validation, as the store takes them;
        refusals and validate-only answers go to `outcomes`."""
        policy = dataclasses.replace(self._policy, today=calendar.today())
        pending: list[tuple[int, invoice_pb2.Invoice]] = []
        items: list[tuple[NewInvoice, EventMeta]] = []
        for index, broker, document in prepared:
            issues = validate(document, policy, facts)
            if issues:
                outcomes[index] = rejection(issues)
                continue
            request, principal, trace = submissions[index]
            submitted = invoice_pb2.Invoice()
            submitted.CopyFrom(request.invoice)
            submitted.broker = broker
            submitted.cufe = document.cufe
            submitted.source_format = submitted.source_format or invoice_pb2.SOURCE_FORMAT_API
            if submitted.HasField("ocr_review"):  # who vouched for what Tesseract read
                submitted.ocr_review.confirmed_by = principal.subject
                submitted.source_format = invoice_pb2.SOURCE_FORMAT_OCR
            if request.validate_only:
                outcomes[index] = submitted
                continue
            pending.append((index, submitted))
            items.append(
                (
                    NewInvoice(
                        document_json=chain.canonical(to_dict(submitted)),
                        document_pb=submitted.SerializeToString(),
                        number=document.number,
                        cufe=document.cufe,
                        seller_nit=document.seller.number,
                        buyer_id=document.buyer.number,
                        issue_date=document.issue_date,
                        broker=broker,
                        products={
                            code: {"category": facts[code].category, "withholding_class": facts[code].withholding_class}
                            for code in product_codes(document)
                            if code in facts
                        },
                        fingerprint=request_fingerprint(request) if request.request_id else "",
                    ),
                    EventMeta(principal.subject, broker, request.request_id, trace),
                )
            )
        return pending, items

    async def _register(
        self, request: invoice_service_pb2.RegisterInvoiceRequest, principal: Principal
    ) -> invoice_pb2.Invoice:
        """One registration, committed together with whatever else arrives within 2 ms."""
        return await self._single.submit(Submission(request, principal, trace_context()))

    async def close(self) -> None:
        await self._single.close()

    async def RegisterInvoice(
        self, request: invoice_service_pb2.RegisterInvoiceRequest, context: Any
    ) -> invoice_pb2.Invoice:
        return await self._register(request, require_principal())

    async def BatchRegisterInvoices(
        self, request: invoice_service_pb2.BatchRegisterInvoicesRequest, context: Any
    ) -> invoice_service_pb2.BatchRegisterInvoicesResponse:
        principal = require_principal()
        trace = trace_context()
        outcomes = await self._register_all([Submission(item, principal, trace) for item in request.requests])
        response = invoice_service_pb2.BatchRegisterInvoicesResponse()
        for index, outcome in enumerate(outcomes):
            result = response.results.add(index=index)
            if isinstance(outcome, ServiceError):
                status = to_status(outcome)
                result.error.CopyFrom(
                    status_pb2.Status(code=status.code, message=status.message, details=status.details)
                )
            else:
                result.invoice.CopyFrom(outcome)
        return response

    async def GetInvoice(self, request: invoice_service_pb2.GetInvoiceRequest, context: Any) -> invoice_pb2.Invoice:
        return to_proto(await self._visible(request.name, "name"))

    async def ListInvoices(
        self, request: invoice_service_pb2.ListInvoicesRequest, context: Any
    ) -> invoice_service_pb2.ListInvoicesResponse:
        broker = acting_for(require_principal(), request.broker, "lists")

        def date(value: Any, field: str) -> dt.date | None:
            if not (value.year or value.month or value.day):
                return None
            try:
                return dt.date(value.year, value.month, value.day)
            except ValueError as exc:
                raise InvalidArgument(
                    f"{field} is not a calendar date: {exc}",
                    reason="INVALID_DATE",
                    violations=[FieldViolation(field, f"not a calendar date: {exc}", "INVALID_DATE")],
                ) from exc

        where = ListFilter(
            broker=broker,
            state=STATES.get(request.state, ""),
            seller_nit=request.seller_nit,
            buyer_id=request.buyer_id,
            issue_from=date(request.issue_date_from, "issue_date_from"),
            issue_to=date(request.issue_date_to, "issue_date_to"),
            registered_from=request.register_time_from.ToDatetime(dt.UTC)
            if request.HasField("register_time_from")
            else None,
            registered_to=request.register_time_to.ToDatetime(dt.UTC) if request.HasField("register_time_to") else None,
        )
        rows, token = await list_page(request, (INSTANT, TEXT), 50, self._store.search, where)
        return invoice_service_pb2.ListInvoicesResponse(invoices=[to_proto(r) for r in rows], next_page_token=token)

    @keyed(invoice_pb2.Invoice)
    async def AnnulInvoice(self, request: invoice_service_pb2.AnnulInvoiceRequest, context: Any) -> invoice_pb2.Invoice:
        current = await self._visible(request.name, "name")
        try:
            expected = int(request.etag.strip('W/"')) if request.etag else 0
        except ValueError as exc:
            raise InvalidArgument(
                "etag is not one this service handed out",
                reason="INVALID_ETAG",
                violations=[FieldViolation("etag", 'must look like W/"<version>"', "INVALID_ETAG")],
            ) from exc
        meta = EventMeta(require_principal().subject, current.broker, request.request_id, trace_context())
        row = await self._store.transition(current.id, "InvoiceAnnulled", {"reason": request.reason}, meta, expected)
        return to_proto(row)

    async def ListInvoiceEvents(
        self, request: invoice_service_pb2.ListInvoiceEventsRequest, context: Any
    ) -> invoice_service_pb2.ListInvoiceEventsResponse:
        if request.parent == "invoices/-":  # AIP-159: every invoice the caller may see, in log order
            scope = tenant_scope(require_principal())
            events, token = await list_page(request, (INT,), 100, self._store.log, request.after_position, scope)
        else:
            invoice = await self._visible(request.parent, "parent")
            events, token = await list_page(request, (INT32,), 100, self._store.events, invoice.id)
        return invoice_service_pb2.ListInvoiceEventsResponse(
            events=[_event_proto(e) for e in events], next_page_token=token
        )

    async def ImportInvoices(
        self, request: invoice_service_pb2.ImportInvoicesRequest, context: Any
    ) -> operations_pb2.Operation:
        principal = require_principal()
        acting_for(principal, request.broker, "imports")
        return await self.importer.start(request, principal, tenant_scope(principal), context.time_remaining())

    async def ReconcileInvoices(
        self, request: invoice_service_pb2.ReconcileInvoicesRequest, context: Any
    ) -> invoice_service_pb2.ReconcileInvoicesResponse:
        report = await self.reconciler.run(
            dt.timedelta(seconds=request.older_than_seconds if request.HasField("older_than_seconds") else 600),
            request.limit or 1000,
            repair=not request.validate_only,
        )
        return invoice_service_pb2.ReconcileInvoicesResponse(
            behind=report.behind,
            steps_recorded=report.steps_recorded,
            redriven=report.redriven,
            certificates_requested=report.certificates_requested,
            unresolved=[
                invoice_service_pb2.Discrepancy(invoice=invoice, reason=reason, detail=detail)
                for invoice, reason, detail in report.unresolved
            ],
        )

    async def VerifyEventChain(
        self, request: invoice_service_pb2.VerifyEventChainRequest, context: Any
    ) -> invoice_service_pb2.VerifyEventChainResponse:
        start = max(1, request.from_position)
        report = await verify_chain(self._store, start)
        return invoice_service_pb2.VerifyEventChainResponse(
            intact=report.intact,
            events_checked=report.checked,
            first_broken_position=report.first_broken_position,
            detail=report.detail,
            head_hash=report.head_hash,
        )


async def verify_chain(store: InvoiceStore, start: int = 1) -> chain.ChainReport:
    """Re-walks the stored chain from `start`, a batch at a time, then checks
    it ends at the recorded head, all in one snapshot: an append committing
    meanwhile is either wholly seen or not at all, never mistaken for tampering."""
    async with store.snapshot() as snapshot:
        walk = chain.ChainWalk(await snapshot.hash_before(start), start)
        async with contextlib.aclosing(snapshot.walk(start)) as events:
            async for event in events:
                if not walk.step(event):
                    return walk.report()
        report = walk.report()
        position, head = await snapshot.head()
    if (walk.position - 1, report.head_hash) != (position, head):
        return chain.ChainReport(False, report.checked, walk.position, "the chain ends before its recorded head", head)
    return report


def _event_proto(event: chain.ChainedEvent) -> invoice_pb2.InvoiceEvent:
    proto = invoice_pb2.InvoiceEvent(
        event_id=event.event_id,
        position=event.position,
        invoice=f"invoices/{event.stream_id}",
        version=event.version,
        type=event.type,
        actor=str(event.metadata.get("actor", "")),
        tenant=str(event.metadata.get("tenant", "")),
        request_id=str(event.metadata.get("request_id", "")),
        trace_id=str(event.metadata.get("trace_id", "")),
        prev_hash=event.prev_hash,
        hash=event.hash,
    )
    proto.data.update(dict(event.data))
    proto.record_time.FromDatetime(event.record_time)
    return proto
