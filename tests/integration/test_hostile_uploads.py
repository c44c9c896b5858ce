"""Hostile uploads (issue #15, defect 4) against the running services: each
bomb is refused with a precise reason in well under a second, work past the
caller's deadline is stopped, and the service answers its health checks
throughout (polled from another thread while the upload is in flight)."""

from __future__ import annotations

import io
import random
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pikepdf
import psutil
import pytest
from PIL import Image

from bmc.invoice.v1 import invoice_service_pb2
from bmc.ocr.v1 import ocr_service_pb2, ocr_service_pb2_grpc
from services.cli.cluster import health_of
from services.kit.topology import SERVICES
from services.ocr.samples import render_pdf, sample_invoices, scan
from tests.conftest import Platform
from tests.integration.clients import Client
from tests.integration.invoice_helpers import registry
from tests.integration.product_helpers import reason, violations

T = TypeVar("T")
# "At once", as a bound that tells the behaviours apart rather than a
# performance figure (bench/ and the README have those): refused from its
# headers, a bomb takes well under a second here; read, these took 37 s to
# 10 minutes before the fix.
AT_ONCE = 5.0
pytestmark = pytest.mark.parametrize("platform", ["embedded"], indirect=True)


class Watched:
    """An action run while another thread checks the service's health every 100 ms."""

    def __init__(self, platform: Platform, service: str) -> None:
        self._platform, self._spec = platform, SERVICES[service]
        self.health: list[str] = []
        self.seconds = 0.0
        self.error: grpc.RpcError | None = None

    def run(self, action: Callable[[], T]) -> T | None:
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                self.health.append(health_of(self._platform.settings, self._spec, timeout=1.0))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            return action()
        except grpc.RpcError as exc:
            self.error = exc
            return None
        finally:
            self.seconds = time.monotonic() - started
            time.sleep(0.2)  # one more check once the action is over
            done.set()
            watcher.join()

    def healthy(self) -> bool:
        return bool(self.health) and all(status == "SERVING" for status in self.health)


@pytest.fixture
def ocr(platform: Platform) -> Iterator[Client]:
    with Client(platform.settings, "ocr", ocr_service_pb2_grpc.OcrServiceStub, "operator") as client:
        yield client


def _extract(client: Client, content: bytes, **kw: Any) -> Callable[[], Any]:
    return lambda: client.ExtractInvoice(ocr_service_pb2.ExtractInvoiceRequest(content=content, filename="x"), **kw)


def image_bomb() -> bytes:
    """A PNG of 10,900 x 10,900 pixels (118.8 million: under twice Pillow's own
    limit, so Pillow would only warn) in a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (10_900, 10_900), 1).save(out, "PNG")
    return out.getvalue()


def content_bomb() -> bytes:
    """A one-page PDF whose content stream inflates to 60 MiB."""
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.pages[0].Contents = pdf.make_stream(b"0 0 m 1 1 l S\n" * (60 * 2**20 // 14))
    out = io.BytesIO()
    pdf.save(out, compress_streams=True)
    return out.getvalue()


def test_an_image_bomb_is_refused_before_it_is_decoded(platform: Platform, ocr: Client) -> None:
    bomb = image_bomb()
    watched = Watched(platform, "ocr")
    watched.run(_extract(ocr, bomb))
    assert len(bomb) < 200_000
    assert watched.error is not None
    assert watched.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(watched.error) == "IMAGE_TOO_LARGE"
    assert "10900 x 10900" in (watched.error.details() or "")
    assert watched.seconds < AT_ONCE, watched.seconds
    assert watched.healthy(), [h for h in watched.health if h != "SERVING"]


def test_a_pdf_content_bomb_is_refused_without_inflating_it(platform: Platform, ocr: Client) -> None:
    bomb = content_bomb()
    watched = Watched(platform, "ocr")
    watched.run(_extract(ocr, bomb))
    assert len(bomb) < 300_000
    assert watched.error is not None
    assert watched.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(watched.error) == "PAGE_CONTENT_TOO_LARGE"
    assert watched.seconds < AT_ONCE, watched.seconds
    assert watched.healthy(), [h for h in watched.health if h != "SERVING"]


def _workers(platform: Platform) -> set[int]:
    service = psutil.Process(platform.cluster.processes["ocr"][0].pid)
    return {child.pid for child in service.children(recursive=True)}


def test_reading_stops_when_the_callers_deadline_passes(platform: Platform, ocr: Client) -> None:
    invoice = next(i for i in sample_invoices(6) if not i.with_qr)
    pages = [Image.open(io.BytesIO(scan(render_pdf(invoice), seed))) for seed in range(4)]
    tiff = io.BytesIO()
    pages[0].save(tiff, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")  # seconds of OCR
    before = _workers(platform)
    watched = Watched(platform, "ocr")
    content = tiff.getvalue()

    def upload() -> Iterator[ocr_service_pb2.StreamExtractInvoiceRequest]:
        yield ocr_service_pb2.StreamExtractInvoiceRequest(header=ocr_service_pb2.UploadHeader(filename="scan.tiff"))
        for start in range(0, len(content), 2**20):
            yield ocr_service_pb2.StreamExtractInvoiceRequest(chunk=content[start : start + 2**20])

    watched.run(lambda: ocr.StreamExtractInvoice(upload(), timeout=1.5))
    deadline = time.monotonic() + 5
    while _workers(platform) & before == before and time.monotonic() < deadline:
        time.sleep(0.1)
    after = _workers(platform)
    assert watched.error is not None
    assert watched.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert before - after, "the worker reading past the deadline was stopped (and replaced)"
    assert watched.healthy(), [h for h in watched.health if h != "SERVING"]
    assert ocr.ExtractInvoice(ocr_service_pb2.ExtractInvoiceRequest(content=render_pdf(invoice))).fields


def xml_zip(documents: int, size: int, compressible: bool) -> bytes:
    """A ZIP of XML documents of about `size` bytes: blank (a bomb), or a
    soup of small elements with random attributes that barely compresses and
    takes seconds to walk."""
    archive = io.BytesIO()
    rng = random.Random(3)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(documents):
            if compressible:
                body = b"<a>" + b" " * size + b"</a>"
            else:
                body = b"<a>" + b"".join(b'<b x="%s"/>' % rng.randbytes(8).hex().encode() for _ in range(size // 28))
                body += b"</a>"
            z.writestr(f"f{n}.xml", body)
    return archive.getvalue()


def test_a_zip_of_huge_xml_is_refused_at_once(platform: Platform) -> None:
    bomb = xml_zip(5, 10 * 2**20 - 16, compressible=True)
    watched = Watched(platform, "invoice")
    with registry(platform.settings) as reg:
        watched.run(
            lambda: reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=bomb, filename="bomb.zip"))
        )
    assert len(bomb) < 100_000
    assert watched.error is not None
    assert watched.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(watched.error) == [("content", "DECOMPRESSION_BOMB")]
    assert watched.seconds < AT_ONCE, watched.seconds
    assert watched.healthy(), [h for h in watched.health if h != "SERVING"]


def test_large_documents_are_read_away_from_the_event_loop(platform: Platform) -> None:
    """Three 8 MiB XML documents that are no bomb but take seconds each to
    walk: read in the worker while the service keeps answering; each refused
    as no invoice."""
    content = xml_zip(3, 9 * 2**20, compressible=False)
    watched = Watched(platform, "invoice")
    with registry(platform.settings) as reg:

        def run_import() -> Any:
            operation = reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, filename="big"))
            return reg.wait(operation.name, timeout=120)

        done = watched.run(run_import)
    assert watched.error is None, watched.error
    assert done is not None
    assert not done.HasField("error"), done
    assert watched.healthy(), [h for h in watched.health if h != "SERVING"]
    assert len(watched.health) >= 3, "the health checks ran while the documents were read"


def test_a_damaged_pdf_is_refused_in_words_not_object_reprs(platform: Platform, ocr: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        ocr.ExtractInvoice(ocr_service_pb2.ExtractInvoiceRequest(content=b"%PDF-1.7\n" + b"\x00garbage" * 50))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(caught.value) == "UNREADABLE_PDF"
    assert " object at 0x" not in (caught.value.details() or "")
    assert "<_io." not in (caught.value.details() or "")
