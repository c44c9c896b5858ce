"""`ImportInvoices`: the invoices of an uploaded file, registered one by one
as a long-running operation with progress, cancellation and a per-document
report. A crash resumes the operation from the start; every document carries
a request id derived from the operation, so documents already registered are
recognised, not registered twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2

from bmc.auth.v1 import policy_pb2
from bmc.common.v1 import operation_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.invoice.conversion import proto_from_document
from services.invoice.documents import DocumentError, detect, split
from services.invoice.ubl import UblError, safe_root
from services.kit.background import BackgroundTasks
from services.kit.errors import FieldViolation, InvalidArgument, ServiceError
from services.kit.operations import OperationStore
from services.kit.tokens import Principal

log = structlog.get_logger("bmc.invoice.import")
KIND = "import-invoices"
GROUP_SIZE = 200

# Registers a group of requests for one caller: an invoice or the refusing error for each.
Register = Callable[
    [Sequence[invoice_service_pb2.RegisterInvoiceRequest], Principal],
    Awaitable[Sequence[invoice_pb2.Invoice | ServiceError]],
]


class InvoiceImporter:
    def __init__(self, operations: OperationStore, register: Register) -> None:
        self._operations, self._register = operations, register
        self._background = BackgroundTasks()

    def _spawn(self, name: str) -> None:
        self._background.spawn(self.run(name), name)

    async def start(
        self, request: invoice_service_pb2.ImportInvoicesRequest, principal: Principal, tenant: str
    ) -> operations_pb2.Operation:
        try:
            kind = detect(request.content, request.format)
            if kind in (invoice_pb2.DOCUMENT_FORMAT_UBL_INVOICE, invoice_pb2.DOCUMENT_FORMAT_ATTACHED_DOCUMENT):
                safe_root(request.content)  # hostile XML is refused here, before anything is queued
        except DocumentError as exc:
            raise InvalidArgument(
                str(exc),
                reason="UNREADABLE_DOCUMENT",
                violations=[FieldViolation("content", str(exc), "UNREADABLE_DOCUMENT")],
            ) from exc
        except UblError as exc:
            raise InvalidArgument(
                exc.message, reason=exc.reason, violations=[FieldViolation("content", exc.message, exc.reason)]
            ) from exc
        meta = invoice_pb2.ImportInvoicesMetadata(
            filename=request.filename, progress=operation_pb2.Progress(stage="queued")
        )
        meta.progress.start_time.GetCurrentTime()
        operation, created = await self._operations.create(
            KIND, request, meta, request_id=request.request_id, tenant=tenant, subject=principal.subject
        )
        if created:
            self._spawn(operation.name)
        return operation

    async def resume_unfinished(self) -> None:
        for name in await self._operations.unfinished(KIND):
            self._spawn(name)

    async def close(self) -> None:
        await self._background.close()

    async def run(self, name: str) -> None:
        record = await self._operations.record(name)
        request = record.unpack_request(invoice_service_pb2.ImportInvoicesRequest())
        assert isinstance(request, invoice_service_pb2.ImportInvoicesRequest)
        roles = {policy_pb2.ROLE_BROKER} if record.tenant else {policy_pb2.ROLE_OPERATOR}
        principal = Principal(record.subject, frozenset(roles), record.tenant.removeprefix("brokers/"))
        meta = invoice_pb2.ImportInvoicesMetadata(filename=request.filename)
        (await self._operations.get(name)).metadata.Unpack(meta)
        response = invoice_pb2.ImportInvoicesResponse()
        group: list[tuple[invoice_pb2.ImportedDocument, invoice_service_pb2.RegisterInvoiceRequest]] = []
        try:
            for index, source in enumerate(split(request.content, request.format, request.filename)):
                outcome = response.documents.add(source=source.source)
                if source.error is not None or source.document is None:
                    error = source.error
                    outcome.issues.add(
                        field=error.path if error else "", reason=error.reason if error else "UNREADABLE",
                        description=error.message if error else "unreadable",
                    )  # fmt: skip
                    response.rejected += 1
                    continue
                outcome.number = source.document.number
                proto = proto_from_document(source.document, source.source_format)
                proto.broker = request.broker
                # A request id per document: a resumed import recognises what it already registered.
                group.append(
                    (outcome, invoice_service_pb2.RegisterInvoiceRequest(invoice=proto, request_id=f"{name}#{index}"))
                )
                if len(group) == GROUP_SIZE:
                    await self._register_group(group, principal, response)
                    if await self._report(name, meta, response, "registering"):
                        cancelled = status_pb2.Status(code=code_pb2.CANCELLED, message="import cancelled")
                        await self._finish(name, meta, response, cancelled)
                        return
            await self._register_group(group, principal, response)
        except DocumentError as exc:
            invalid = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))
            await self._finish(name, meta, response, invalid)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("invoice import failed", operation=name)
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"import stopped: {type(exc).__name__}")
            await self._finish(name, meta, response, status)
            return
        await self._finish(name, meta, response, None)

    async def _register_group(
        self,
        group: list[tuple[invoice_pb2.ImportedDocument, invoice_service_pb2.RegisterInvoiceRequest]],
        principal: Principal,
        response: invoice_pb2.ImportInvoicesResponse,
    ) -> None:
        """Registers a group of documents in one batch and records each outcome."""
        if not group:
            return
        results = await self._register([request for _, request in group], principal)
        for (outcome, _), result in zip(group, results, strict=True):
            if isinstance(result, InvalidArgument):
                for v in result.violations:
                    outcome.issues.add(
                        field=v.field.removeprefix("invoice."), reason=v.reason, description=v.description
                    )
                if not result.violations:
                    outcome.issues.add(reason=result.reason, description=result.message)
            elif isinstance(result, ServiceError):
                outcome.issues.add(reason=result.reason, description=result.message)
            else:
                outcome.invoice = result.name
            if outcome.invoice:
                response.registered += 1
            else:
                response.rejected += 1
        group.clear()

    async def _report(
        self,
        name: str,
        meta: invoice_pb2.ImportInvoicesMetadata,
        response: invoice_pb2.ImportInvoicesResponse,
        stage: str,
    ) -> bool:
        meta.progress.done = response.registered + response.rejected
        meta.progress.rejected = response.rejected
        meta.progress.stage = stage
        meta.progress.update_time.GetCurrentTime()
        return await self._operations.update_metadata(name, meta)

    async def _finish(
        self,
        name: str,
        meta: invoice_pb2.ImportInvoicesMetadata,
        response: invoice_pb2.ImportInvoicesResponse,
        error: status_pb2.Status | None,
    ) -> None:
        await self._report(name, meta, response, "done" if error is None else "stopped")
        meta.progress.total = response.registered + response.rejected
        meta.progress.end_time.GetCurrentTime()
        await self._operations.finish(name, meta=meta, response=None if error else response, error=error)
