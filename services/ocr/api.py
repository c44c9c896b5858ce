"""The `OcrService` servicer: uploads in, extractions out."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bmc.ocr.v1 import ocr_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from services.kit.auth import require_principal, tenant_scope
from services.kit.errors import NotFound, ResourceExhausted
from services.kit.metrics import OCR_HELD, OCR_PAGES
from services.kit.names import resource_id
from services.kit.paging import INSTANT, TEXT, list_page
from services.kit.workers import IsolatedPool
from services.ocr.conversion import SOURCES, draft_invoice, fields_to_proto
from services.ocr.domain import overall, to_confirm
from services.ocr.reading import Limits, content_type, invalid, read_in_worker
from services.ocr.store import ExtractionStore


class OcrApi(ocr_service_pb2_grpc.OcrServiceServicer):
    """RPCs of `bmc.ocr.v1.OcrService`."""

    def __init__(self, store: ExtractionStore, readers: IsolatedPool, limits: Limits) -> None:
        self._store, self._readers, self._limits = store, readers, limits

    async def _extract(self, content: bytes, filename: str, password: str, context: Any) -> ocr_pb2.Extraction:
        """Reads the upload in an isolated worker, within the document's
        budget and the caller's deadline (the worker is killed at either)."""
        started = time.perf_counter()
        if len(content) > self._limits.max_bytes:
            raise ResourceExhausted(f"{len(content)} bytes; at most {self._limits.max_bytes}", reason="FILE_TOO_LARGE")
        content_type(content)  # not a PDF or an image: refused without a worker
        budget = self._limits.budget()
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            budget = max(0.1, min(budget, remaining))
        reading, pages, kind = await self._readers.run(budget, read_in_worker, content, self._limits, password)
        extraction = ocr_pb2.Extraction(
            name=f"extractions/{uuid.uuid4().hex}",
            filename=filename,
            content_type=kind,
            sha256=hashlib.sha256(content).hexdigest(),
            fields=fields_to_proto(reading),
            draft=draft_invoice(reading),
            warnings=[
                ocr_pb2.ExtractionWarning(code=w.code, fields=w.fields, message=w.message) for w in reading.warnings
            ],
            confidence=round(overall(reading), 3),
            broker=tenant_scope(require_principal()),
        )
        extraction.fields_to_confirm.extend(to_confirm(reading))
        for held in extraction.fields_to_confirm:
            OCR_HELD.labels(held).inc()
        if extraction.fields_to_confirm:
            extraction.warnings.add(
                code="CONFIRMATION_NEEDED",
                fields=extraction.fields_to_confirm,
                message="read by OCR and not checked by anything on the page: a person must confirm or correct "
                f"{', '.join(extraction.fields_to_confirm)} before the draft is registered",
            )
        if not reading.lines:
            extraction.warnings.add(code="NO_LINES", fields=["lines"], message="no line items could be read")
        extraction.warnings.add(
            code="PRODUCTS_TO_CHOOSE",
            fields=["lines"],
            message="pick the catalog product of each line before registering",
        )
        for page in pages:
            OCR_PAGES.labels(page.source.value).inc()
            report = extraction.pages.add(
                page=page.page,
                source=SOURCES[page.source],
                rotation=page.rotation,
                skew=page.skew,
                ocr_confidence=round(page.ocr_confidence, 3),
            )
            report.duration.FromTimedelta(dt.timedelta(seconds=page.seconds))
        extraction.create_time.GetCurrentTime()
        extraction.duration.FromTimedelta(dt.timedelta(seconds=time.perf_counter() - started))
        await self._store.save(extraction)
        return extraction

    async def ExtractInvoice(self, request: ocr_service_pb2.ExtractInvoiceRequest, context: Any) -> ocr_pb2.Extraction:
        return await self._extract(request.content, request.filename, request.password, context)

    async def StreamExtractInvoice(
        self, request_iterator: AsyncIterator[ocr_service_pb2.StreamExtractInvoiceRequest], context: Any
    ) -> ocr_pb2.Extraction:
        header: ocr_service_pb2.UploadHeader | None = None
        chunks: list[bytes] = []
        received = 0
        async for part in request_iterator:
            if part.WhichOneof("part") == "header":
                if header is not None or chunks:
                    raise invalid("HEADER_NOT_FIRST", "the header comes once, before any chunk", "header")
                header = part.header
                if header.size_bytes > self._limits.max_bytes:
                    raise ResourceExhausted(
                        f"{header.size_bytes} bytes announced; at most {self._limits.max_bytes}",
                        reason="FILE_TOO_LARGE",
                    )
                continue
            received += len(part.chunk)
            if received > self._limits.max_bytes:
                raise ResourceExhausted(f"more than {self._limits.max_bytes} bytes", reason="FILE_TOO_LARGE")
            chunks.append(part.chunk)
        if header is None:
            raise invalid("HEADER_REQUIRED", "the first message must be the upload header", "header")
        if not received:
            raise invalid("EMPTY_UPLOAD", "no bytes were sent", "chunk")
        if header.size_bytes and header.size_bytes != received:
            raise invalid("SIZE_MISMATCH", f"{received} bytes received, {header.size_bytes} announced", "chunk")
        return await self._extract(b"".join(chunks), header.filename, header.password, context)

    async def GetExtraction(self, request: ocr_service_pb2.GetExtractionRequest, context: Any) -> ocr_pb2.Extraction:
        found = await self._store.get(resource_id(request.name, "extractions"), tenant_scope(require_principal()))
        if found is None:
            raise NotFound(f"{request.name} not found", reason="EXTRACTION_NOT_FOUND")
        return found

    async def ListExtractions(
        self, request: ocr_service_pb2.ListExtractionsRequest, context: Any
    ) -> ocr_service_pb2.ListExtractionsResponse:
        broker = tenant_scope(require_principal())
        extractions, token = await list_page(request, (INSTANT, TEXT), 20, self._store.page, broker)
        return ocr_service_pb2.ListExtractionsResponse(extractions=extractions, next_page_token=token)
