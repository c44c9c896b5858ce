"""`ImportInvoices`: the invoices of an uploaded file, registered one by one
as a long-running operation with progress, cancellation and a per-document
report. A crash resumes the operation from the start; every document carries
a request id derived from the operation, so documents already registered are
recognised, not registered twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2

from bmc.auth.v1 import policy_pb2
from bmc.common.v1 import operation_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.invoice.conversion import proto_from_document
from services.invoice.documents import DocumentError, detect, split
from services.invoice.ubl import UblError, safe_root
from services.kit.errors import FieldViolation, InvalidArgument, ServiceError
from services.kit.operations import OperationStore
from services.kit.tokens import Principal

log = structlog.get_logger("bmc.invoice.import")
KIND = "import-invoices"
PROGRESS_EVERY = 25

Register = Callable[[invoice_service_pb2.RegisterInvoiceRequest, Principal], Awaitable[invoice_pb2.Invoice]]


class InvoiceImporter:
    def __init__(self, operations: OperationStore, register: Register) -> None:
        self._operations, self._register = operations, register
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, name: str) -> None:
        task = asyncio.create_task(self.run(name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self, name: str) -> None:
        record = await self._operations.record(name)
        request = record.unpack_request(invoice_service_pb2.ImportInvoicesRequest())
        assert isinstance(request, invoice_service_pb2.ImportInvoicesRequest)
        roles = {policy_pb2.ROLE_BROKER} if record.tenant else {policy_pb2.ROLE_OPERATOR}
        principal = Principal(record.subject, frozenset(roles), record.tenant.removeprefix("brokers/"))
        meta = invoice_pb2.ImportInvoicesMetadata(filename=request.filename)
        (await self._operations.get(name)).metadata.Unpack(meta)
        response = invoice_pb2.ImportInvoicesResponse()
        try:
            for index, source in enumerate(split(request.content, request.format, request.filename)):
                outcome = response.documents.add(source=source.source)
                if source.error is not None or source.document is None:
                    error = source.error
                    outcome.issues.add(
                        field=error.path if error else "", reason=error.reason if error else "UNREADABLE",
                        description=error.message if error else "unreadable",
                    )  # fmt: skip
                else:
                    outcome.number = source.document.number
                    await self._register_one(
                        name, index, request, source.document, source.source_format, principal, outcome
                    )
                if outcome.invoice:
                    response.registered += 1
                else:
                    response.rejected += 1
                if (index + 1) % PROGRESS_EVERY == 0 and await self._report(name, meta, response, "registering"):
                    await self._finish(
                        name, meta, response, status_pb2.Status(code=code_pb2.CANCELLED, message="import cancelled")
                    )
                    return
        except DocumentError as exc:
            await self._finish(
                name, meta, response, status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("invoice import failed", operation=name)
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"import stopped: {type(exc).__name__}")
            await self._finish(name, meta, response, status)
            return
        await self._finish(name, meta, response, None)

    async def _register_one(
        self,
        name: str,
        index: int,
        request: invoice_service_pb2.ImportInvoicesRequest,
        document: object,
        source_format: int,
        principal: Principal,
        outcome: invoice_pb2.ImportedDocument,
    ) -> None:
        proto = proto_from_document(document, source_format)  # type: ignore[arg-type]
        proto.broker = request.broker
        registration = invoice_service_pb2.RegisterInvoiceRequest(invoice=proto, request_id=f"{name}#{index}")
        try:
            registered = await self._register(registration, principal)
        except InvalidArgument as error:
            for v in error.violations:
                outcome.issues.add(field=v.field.removeprefix("invoice."), reason=v.reason, description=v.description)
            if not error.violations:
                outcome.issues.add(reason=error.reason, description=error.message)
        except ServiceError as error:
            outcome.issues.add(reason=error.reason, description=error.message)
        else:
            outcome.invoice = registered.name

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
