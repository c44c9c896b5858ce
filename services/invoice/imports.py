"""`ImportInvoices`: the invoices of an uploaded file, registered in groups
as a long-running operation with progress, cancellation and a per-document
report. The file is checked when the import is requested and read in an
isolated worker process (never on the event loop), within a time and
memory budget. A crash resumes the operation from the start; every document
carries a request id derived from the operation, so documents already
registered are recognised, not registered twice."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

from google.longrunning import operations_pb2

from bmc.auth.v1 import policy_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.invoice.conversion import proto_from_document
from services.invoice.documents import (
    DocumentError,
    Part,
    SourceDocument,
    detect,
    inspect,
    parse_parts,
    read_documents,
    reading_budget,
    zip_document_count,
    zip_parts,
)
from services.invoice.ubl import UblError
from services.kit.database import Database
from services.kit.errors import FieldViolation, InvalidArgument, ServiceError
from services.kit.operations import Job, OperationRunner, OperationStore
from services.kit.tokens import Principal
from services.kit.workers import IsolatedPool

KIND = "import-invoices"
GROUP_SIZE = 200
INSPECT_SECONDS = 10.0  # a file's directory or a single document's well-formedness

# Registers a group of requests for one caller: an invoice or the refusing error for each.
Register = Callable[
    [Sequence[invoice_service_pb2.RegisterInvoiceRequest], Principal],
    Awaitable[Sequence[invoice_pb2.Invoice | ServiceError]],
]
ImportJob = Job[invoice_service_pb2.ImportInvoicesRequest, invoice_pb2.ImportInvoicesMetadata]
Group = list[tuple[invoice_pb2.ImportedDocument, invoice_service_pb2.RegisterInvoiceRequest]]


def unreadable(exc: DocumentError | UblError) -> InvalidArgument:
    if isinstance(exc, UblError):
        return InvalidArgument(
            exc.message, reason=exc.reason, violations=[FieldViolation("content", exc.message, exc.reason)]
        )
    return InvalidArgument(str(exc), reason=exc.reason, violations=[FieldViolation("content", str(exc), exc.reason)])


class InvoiceImporter:
    def __init__(
        self, database: Database, operations: OperationStore, register: Register, readers: IsolatedPool
    ) -> None:
        self._register, self._readers = register, readers
        self.runner = OperationRunner(
            database,
            operations,
            KIND,
            invoice_service_pb2.ImportInvoicesRequest,
            invoice_pb2.ImportInvoicesMetadata,
            self._run,
        )

    async def _inspect(self, request: invoice_service_pb2.ImportInvoicesRequest, seconds: float) -> None:
        """Refuses a hostile or unreadable file: an archive by its directory
        (read here, in a thread: nothing is inflated), a document in the worker."""
        try:
            if detect(request.content, request.format) == invoice_pb2.DOCUMENT_FORMAT_ZIP:
                await asyncio.to_thread(inspect, request.content, request.format)
            else:
                await self._readers.run(seconds, inspect, request.content, request.format)
        except (DocumentError, UblError) as exc:
            raise unreadable(exc) from exc

    async def start(
        self,
        request: invoice_service_pb2.ImportInvoicesRequest,
        principal: Principal,
        tenant: str,
        time_remaining: float | None = None,
    ) -> operations_pb2.Operation:
        """Checks the file (refused here, before anything is queued, when
        hostile or unreadable) and starts the import."""
        await self._inspect(request, min(INSPECT_SECONDS, time_remaining or INSPECT_SECONDS))
        meta = invoice_pb2.ImportInvoicesMetadata(filename=request.filename)
        return await self.runner.start(request, meta, tenant=tenant, subject=principal.subject)

    async def resume_unfinished(self) -> None:
        await self.runner.resume_unfinished()

    async def close(self) -> None:
        await self.runner.close()

    async def _run(self, job: ImportJob) -> invoice_pb2.ImportInvoicesResponse:
        request = job.request
        roles = {policy_pb2.ROLE_BROKER} if job.tenant else {policy_pb2.ROLE_OPERATOR}
        principal = Principal(job.subject, frozenset(roles), job.tenant.removeprefix("brokers/"))
        await job.report("reading")
        response = invoice_pb2.ImportInvoicesResponse()
        index = 0
        async for sources in self._sources(job):
            group: Group = []
            for source in sources:
                outcome = response.documents.add(source=source.source)
                if source.error is not None or source.document is None:
                    error = source.error
                    outcome.issues.add(
                        field=error.path if error else "", reason=error.reason if error else "UNREADABLE",
                        description=error.message if error else "unreadable",
                    )  # fmt: skip
                    response.rejected += 1
                else:
                    outcome.number = source.document.number
                    proto = proto_from_document(source.document, source.source_format)
                    proto.broker = request.broker
                    # A request id per document: a resumed import recognises what it already registered.
                    registration = invoice_service_pb2.RegisterInvoiceRequest(
                        invoice=proto, request_id=f"{job.name}#{index}"
                    )
                    group.append((outcome, registration))
                index += 1
            await self._register_group(group, principal, response)
            await self._report(job, response)
        return response

    async def _sources(self, job: ImportJob) -> AsyncIterator[list[SourceDocument]]:
        """The file's documents, a group at a time, read in the worker. An
        archive's files are parsed a group at a time, the next group while
        this one is registered; other files are parsed whole."""
        request = job.request
        try:
            if detect(request.content, request.format) != invoice_pb2.DOCUMENT_FORMAT_ZIP:
                budget = reading_budget(len(request.content))
                sources = await self._readers.run(
                    budget, read_documents, request.content, request.format, request.filename
                )
                job.progress.total = len(sources)
                for start in range(0, len(sources), GROUP_SIZE):
                    yield sources[start : start + GROUP_SIZE]
                return
            job.progress.total = await asyncio.to_thread(zip_document_count, request.content)
            parts = zip_parts(request.content)
            pending = await self._parse_next(parts)
            while pending is not None:
                following = await self._parse_next(parts)
                try:
                    yield await pending
                except BaseException:
                    if following is not None:
                        following.cancel()
                    raise
                pending = following
        except (DocumentError, UblError) as exc:
            raise unreadable(exc) from exc

    async def _parse_next(self, parts: Iterator[Part | SourceDocument]) -> asyncio.Task[list[SourceDocument]] | None:
        """The parse of the archive's next group, started in the worker, or None at the end."""
        group = await asyncio.to_thread(lambda: list(itertools.islice(parts, GROUP_SIZE)))  # inflating: off the loop
        if not group:
            return None
        size = sum(len(part[1]) for part in group if isinstance(part, tuple))
        return asyncio.create_task(self._readers.run(reading_budget(size), parse_parts, group))

    async def _register_group(
        self, group: Group, principal: Principal, response: invoice_pb2.ImportInvoicesResponse
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

    @staticmethod
    async def _report(job: ImportJob, response: invoice_pb2.ImportInvoicesResponse) -> None:
        job.progress.done = response.registered + response.rejected
        job.progress.rejected = response.rejected
        await job.report("registering", cancel_message="import cancelled")
