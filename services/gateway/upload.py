"""File upload for the OCR service: REST clients post the file as the raw
request body or as `multipart/form-data`, and the gateway streams it to
`StreamExtractInvoice` in 1 MiB chunks without holding it whole.

The gateway counts what arrives: a body beyond the limit (announced or,
when chunked, as it streams) is 413, and a body that stalls longer than the
read timeout is 408, both decided here rather than left to whatever the
aborted gRPC call reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bmc.ocr.v1 import ocr_service_pb2
from services.gateway.transcoding import TranscodeError

UPLOAD_PATH = "/v1/extractions:upload"
CHUNK = 1024 * 1024
PASSWORD_HEADER = "X-Document-Password"  # noqa: S105 - a header name
_RAW_TYPES = ("application/pdf", "image/", "application/octet-stream")


def _too_large(size: int, limit: int) -> TranscodeError:
    return TranscodeError("file", "FILE_TOO_LARGE", f"the file is {size:,} bytes; the limit is {limit:,}")


@dataclass
class Upload:
    """The messages of one upload, and what stopped it early, if anything."""

    header: ocr_service_pb2.UploadHeader
    read: Callable[[int], Awaitable[bytes]]
    limit: int
    read_timeout: float
    received: int = 0
    failure: TranscodeError | None = field(default=None)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.read_timeout):
                    chunk = await self.read(CHUNK)
            except TimeoutError as exc:
                self.failure = TranscodeError(
                    "file", "SLOW_UPLOAD", f"no bytes of the upload for {self.read_timeout:g} s"
                )
                raise self.failure from exc
            if not chunk:
                return
            self.received += len(chunk)
            if self.received > self.limit:
                self.failure = _too_large(self.received, self.limit)
                raise self.failure
            yield chunk

    async def messages(self) -> AsyncIterator[ocr_service_pb2.StreamExtractInvoiceRequest]:
        yield ocr_service_pb2.StreamExtractInvoiceRequest(header=self.header)
        async for chunk in self._chunks():
            yield ocr_service_pb2.StreamExtractInvoiceRequest(chunk=chunk)

    def check(self) -> None:
        """Raises what cut the upload short, if anything did."""
        if self.failure is not None:
            raise self.failure


@dataclass
class _FilePart:
    file: BodyPartReader
    filename: str
    password: str


async def _file_part(request: web.Request) -> _FilePart | None:
    """The form's `file` part, with the fields sent before it."""
    reader = await request.multipart()
    fields: dict[str, str] = {}
    part: Any = await reader.next()
    while isinstance(part, BodyPartReader) and part.name != "file":
        if part.name in ("password", "filename"):
            fields[part.name] = (await part.read()).decode(errors="replace")
        part = await reader.next()
    if not isinstance(part, BodyPartReader):
        return None
    return _FilePart(part, fields.get("filename") or part.filename or "", fields.get("password", ""))


async def upload_requests(request: web.Request, limit: int, read_timeout: float) -> Upload:
    """Checks the upload's shape, then returns its stream of messages:
    an `UploadHeader`, then the file's bytes in chunks."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    content_type = request.content_type
    filename = request.query.get("filename", "")
    password = request.headers.get(PASSWORD_HEADER, "")
    size = request.content_length or 0
    if content_type == "multipart/form-data":
        try:
            async with asyncio.timeout(read_timeout * 3):
                part = await _file_part(request)
        except TimeoutError as exc:
            raise TranscodeError("body", "SLOW_UPLOAD", "the form's fields arrived too slowly") from exc
        except (ValueError, HttpProcessingError) as exc:
            raise TranscodeError("body", "MALFORMED_MULTIPART", f"the multipart body cannot be read: {exc}") from exc
        if part is None:
            raise TranscodeError(
                "file", "MISSING_FILE", "the form has no `file` part (send password/filename fields before it)"
            )
        password = part.password or password
        filename = part.filename or filename
        size = 0  # the part's size is not announced
        read: Callable[[int], Awaitable[bytes]] = part.file.read_chunk
    elif content_type.startswith(_RAW_TYPES):
        read = request.content.read
    else:
        raise TranscodeError(
            "Content-Type",
            "UNSUPPORTED_MEDIA_TYPE",
            f"upload a PDF or image as the raw body (application/pdf, image/*) or as multipart/form-data "
            f"with a `file` part, not {content_type or 'no content type'}; JSON goes to POST /v1/extractions",
        )
    header = ocr_service_pb2.UploadHeader(filename=filename[:255], size_bytes=size, password=password[:128])
    return Upload(header, read, limit, read_timeout)


def upload_paths() -> dict[str, Any]:
    """The upload route in the OpenAPI document (it has no HTTP rule of its own)."""
    extraction = {"$ref": "#/components/schemas/bmc.ocr.v1.Extraction"}
    error = {"$ref": "#/components/schemas/google.rpc.Status"}
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        UPLOAD_PATH: {
            "post": {
                "operationId": "OcrService_UploadInvoiceFile",
                "tags": ["OcrService"],
                "summary": "Upload a file for extraction",
                "description": "Reads an invoice from a PDF or image posted as the raw body or as multipart/form-data "
                "(`file`, optional `password` and `filename` before it); streamed to `StreamExtractInvoice`.",
                "x-grpc-method": "/bmc.ocr.v1.OcrService/StreamExtractInvoice",
                "parameters": [
                    {"name": "filename", "in": "query", "schema": {"type": "string", "maxLength": 255}},
                    {"name": PASSWORD_HEADER, "in": "header", "schema": {"type": "string", "maxLength": 128}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/pdf": binary,
                        "image/png": binary,
                        "image/jpeg": binary,
                        "image/tiff": binary,
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "password": {"type": "string"},
                                    "filename": {"type": "string"},
                                    "file": {"type": "string", "format": "binary"},
                                },
                                "required": ["file"],
                            }
                        },
                    },
                },
                "responses": {
                    "200": {"description": "Extraction", "content": {"application/json": {"schema": extraction}}},
                    "default": {"description": "An error.", "content": {"application/json": {"schema": error}}},
                },
            }
        }
    }
