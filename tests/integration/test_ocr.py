"""The OCR service over gRPC: field accuracy on a generated set of
Colombian-style invoices (vector PDFs, 200-dpi scans, phone photos), the
draft it returns, streamed uploads, and every kind of upload it refuses."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pikepdf
import pytest
from PIL import Image

from bmc.ocr.v1 import ocr_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from services.ocr.samples import render_pdf, sample_invoices, write
from tests.conftest import Platform
from tests.integration.clients import Client
from tests.integration.product_helpers import reason

KEY_FIELDS = ("number", "issue_date", "seller_nit", "buyer_id", "total", "cufe")
ALL_FIELDS = (*KEY_FIELDS, "issue_time", "seller_nit_dv", "subtotal", "vat")


@pytest.fixture(scope="module")
def reader(platform: Platform) -> Iterator[Client]:
    client = Client(platform.settings, "ocr", ocr_service_pb2_grpc.OcrServiceStub, "broker", "acme")
    yield client
    client.close()


def extract(reader: Client, content: bytes, filename: str = "f", password: str = "") -> ocr_pb2.Extraction:
    request = ocr_service_pb2.ExtractInvoiceRequest(content=content, filename=filename, password=password)
    extraction: ocr_pb2.Extraction = reader.ExtractInvoice(request, timeout=120)
    return extraction


def refused(reader: Client, content: bytes, **kw: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        extract(reader, content, **kw)
    return caught.value.code(), reason(caught.value)


def test_fields_are_read_from_pdfs_scans_and_photos(platform: Platform, reader: Client, tmp_path: Path) -> None:
    if platform.backend != "embedded":
        pytest.skip("reading does not depend on the database: measured once")
    manifest = write(tmp_path, 12)
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for item in manifest:
        for kind, name in item["files"].items():  # type: ignore[attr-defined]
            extraction = extract(reader, (tmp_path / name).read_bytes(), name)
            found = {f.field: f.value for f in extraction.fields}
            source = "qr" if item["with_qr"] else kind
            for field in ALL_FIELDS:
                seen[source] += 1
                right[source] += found.get(field) == item["expected"][field]  # type: ignore[index]
                if field in KEY_FIELDS and kind == "scan":
                    seen["scan key fields"] += 1
                    right["scan key fields"] += found.get(field) == item["expected"][field]  # type: ignore[index]
    accuracy = {k: right[k] / seen[k] for k in seen}
    print("field accuracy:", {k: f"{v:.1%} of {seen[k]}" for k, v in accuracy.items()})
    assert accuracy["qr"] == 1.0, "every field from the QR"
    assert accuracy["pdf"] >= 0.98, "text layers"
    assert accuracy["scan key fields"] >= 0.90, "key fields of 200-dpi scans"


def test_the_draft_is_an_invoice_message_with_confidences(reader: Client) -> None:
    invoice = sample_invoices(3)[2]  # no QR: text layer only
    extraction = extract(reader, render_pdf(invoice), "factura.pdf")
    draft = extraction.draft
    assert extraction.content_type == "application/pdf"
    assert (draft.number, draft.cufe, draft.seller.id.number, draft.buyer.id.number) == (
        invoice.number,
        invoice.cufe,
        invoice.seller[1],
        invoice.buyer[1],
    )
    assert draft.totals.payable_amount == f"{invoice.total:.2f}"
    assert len(draft.lines) == len(invoice.lines)
    assert [line.line_extension_amount for line in draft.lines] == [f"{line.total:.2f}" for line in invoice.lines]
    assert draft.seller.legal_name == invoice.seller[0]
    assert all(f.source == ocr_pb2.FIELD_SOURCE_TEXT_LAYER for f in extraction.fields)
    assert all(0.5 < f.confidence <= 1 for f in extraction.fields)
    assert "PRODUCTS_TO_CHOOSE" in {w.code for w in extraction.warnings}
    again = reader.GetExtraction(ocr_service_pb2.GetExtractionRequest(name=extraction.name))
    assert again == extraction


def test_a_large_scan_is_streamed_in_chunks(reader: Client) -> None:
    invoice = sample_invoices(1)[0]
    image = io.BytesIO()
    Image.open(io.BytesIO(_scan(invoice))).convert("RGB").save(image, "TIFF")  # uncompressed colour: ~12 MB
    content = image.getvalue()

    def parts() -> Iterator[ocr_service_pb2.StreamExtractInvoiceRequest]:
        header = ocr_service_pb2.UploadHeader(filename="scan.tiff", size_bytes=len(content))
        yield ocr_service_pb2.StreamExtractInvoiceRequest(header=header)
        for start in range(0, len(content), 512 * 1024):
            yield ocr_service_pb2.StreamExtractInvoiceRequest(chunk=content[start : start + 512 * 1024])

    extraction = reader.StreamExtractInvoice(parts(), timeout=120)
    assert len(content) > 4 * 1024 * 1024, "too big for the unary call"
    assert extraction.content_type == "image/tiff"
    assert {f.field: f.value for f in extraction.fields}["number"] == invoice.number


def _scan(invoice: object) -> bytes:
    from services.ocr.samples import scan

    return scan(render_pdf(invoice), 1)  # type: ignore[arg-type]


def test_uploads_that_are_not_what_they_claim_are_refused(reader: Client) -> None:
    pdf = render_pdf(sample_invoices(1)[0])
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf)) as document:
        document.save(locked, encryption=pikepdf.Encryption(owner="owner", user="secreto"))
    empty = io.BytesIO()
    pikepdf.new().save(empty)
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    png = io.BytesIO()
    Image.new("RGB", (50, 50), "white").save(png, "PNG")
    assert refused(reader, b"GIF89a not an invoice") == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FORMAT")
    assert refused(reader, locked.getvalue()) == (grpc.StatusCode.INVALID_ARGUMENT, "ENCRYPTED_PDF")
    assert extract(reader, locked.getvalue(), password="secreto").draft.number
    assert refused(reader, empty.getvalue()) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_PAGES")
    assert refused(reader, pdf[: len(pdf) // 3]) == (grpc.StatusCode.INVALID_ARGUMENT, "UNREADABLE_PDF")
    assert refused(reader, png.getvalue()[:40]) == (grpc.StatusCode.INVALID_ARGUMENT, "UNREADABLE_IMAGE")
    assert refused(reader, bomb.getvalue()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "IMAGE_TOO_LARGE")
    assert len(bomb.getvalue()) < 1_000_000, "small on the wire, 400 million pixels decoded"


def test_streams_must_announce_themselves_and_stay_within_limits(reader: Client) -> None:
    def call(*parts: ocr_service_pb2.StreamExtractInvoiceRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            reader.StreamExtractInvoice(iter(parts), timeout=60)
        return caught.value.code(), reason(caught.value)

    chunk = ocr_service_pb2.StreamExtractInvoiceRequest(chunk=b"%PDF-1.7")
    header = ocr_service_pb2.StreamExtractInvoiceRequest(header=ocr_service_pb2.UploadHeader(filename="x.pdf"))
    huge = ocr_service_pb2.StreamExtractInvoiceRequest(
        header=ocr_service_pb2.UploadHeader(filename="x.pdf", size_bytes=500 * 1024 * 1024)
    )
    assert call(chunk) == (grpc.StatusCode.INVALID_ARGUMENT, "HEADER_REQUIRED")
    assert call(header) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_UPLOAD")
    assert call(huge) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "FILE_TOO_LARGE")
    assert call(header, chunk, header) == (grpc.StatusCode.INVALID_ARGUMENT, "HEADER_NOT_FIRST")


def test_brokers_see_only_their_own_extractions(platform: Platform, reader: Client) -> None:
    mine = extract(reader, render_pdf(sample_invoices(1)[0]))
    other = Client(platform.settings, "ocr", ocr_service_pb2_grpc.OcrServiceStub, "broker", "other")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            other.GetExtraction(ocr_service_pb2.GetExtractionRequest(name=mine.name))
        listed = other.ListExtractions(ocr_service_pb2.ListExtractionsRequest())
    finally:
        other.close()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert mine.name not in {e.name for e in listed.extractions}


def test_limits_on_pages_and_time_are_enforced() -> None:
    """In process (the limits are the service's configuration): too many pages,
    and a page that would take longer than allowed to read."""
    from services.kit.errors import ResourceExhausted
    from services.ocr.reading import Limits, TesseractPool, read
    from services.ocr.samples import scan

    invoice = sample_invoices(1)[0]
    pdf = render_pdf(invoice)
    many = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf)) as document:
        for _ in range(3):
            document.pages.append(document.pages[0])
        document.save(many)
    engines = TesseractPool(1)
    try:
        with pytest.raises(ResourceExhausted) as pages:
            read(many.getvalue(), engines, Limits(max_pages=3))
        with pytest.raises(ResourceExhausted) as slow:
            read(scan(pdf, 3), engines, Limits(page_seconds=0.001))
        with pytest.raises(ResourceExhausted) as big:
            read(pdf, engines, Limits(max_bytes=1024))
    finally:
        engines.close()
    assert (pages.value.reason, slow.value.reason, big.value.reason) == (
        "TOO_MANY_PAGES",
        "PAGE_TIMEOUT",
        "FILE_TOO_LARGE",
    )


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_pages_scanned_sideways_or_upside_down_are_turned(turn: int) -> None:
    from services.ocr.reading import TesseractPool, read
    from services.ocr.samples import scan

    invoice = next(i for i in sample_invoices(6) if not i.with_qr)
    upright = Image.open(io.BytesIO(scan(render_pdf(invoice), 2)))
    turned = io.BytesIO()
    upright.rotate(turn, expand=True).save(turned, "PNG")
    engines = TesseractPool(1)
    try:
        reading, pages, _ = read(turned.getvalue(), engines)
    finally:
        engines.close()
    assert (reading.value("number"), reading.value("total")) == (invoice.number, f"{invoice.total:.2f}")
    assert pages[0].rotation == (360 - turn) % 360


def _crop(image: Image.Image, box: ocr_pb2.BoundingBox, pad: float = 0.006) -> Image.Image:
    width, height = image.size
    return image.crop(
        (
            int(max(0.0, box.left - pad) * width),
            int(max(0.0, box.top - pad) * height),
            int(min(1.0, box.left + box.width + pad) * width),
            int(min(1.0, box.top + box.height + pad) * height),
        )
    )


def _located(reading: object) -> dict[str, ocr_pb2.ExtractedField]:
    from services.ocr.conversion import fields_to_proto

    return {f.field: f for f in fields_to_proto(reading)}  # type: ignore[arg-type]


def test_each_field_says_where_on_the_page_it_was_read() -> None:
    """Cut the page at a field's box and read that piece again: it holds the value."""
    import pypdfium2 as pdfium
    import zxingcpp

    from services.ocr.domain import parse_amount, parse_date, parse_dian_qr
    from services.ocr.reading import TesseractPool, read
    from services.ocr.samples import scan

    invoices = sample_invoices(6)
    printed = next(i for i in invoices if not i.with_qr)
    with_qr = next(i for i in invoices if i.with_qr)
    engines = TesseractPool(1)
    try:
        # The text layer: the PDF's own text inside the box.
        pdf = render_pdf(printed)
        fields = _located(read(pdf, engines)[0])
        page = pdfium.PdfDocument(pdf)[0]
        width, height = page.get_size()
        for name in ("number", "total", "cufe", "seller_nit", "issue_date"):
            box = fields[name].box
            assert (box.page, fields[name].source) == (1, ocr_pb2.FIELD_SOURCE_TEXT_LAYER)
            inside = page.get_textpage().get_text_bounded(
                left=box.left * width,
                bottom=(1 - box.top - box.height) * height,
                right=(box.left + box.width) * width,
                top=(1 - box.top) * height,
            )
            assert inside.strip(), name
            if name == "total":
                assert f"{parse_amount(inside):.2f}" == fields[name].value
            elif name == "cufe":
                assert "".join(inside.split()) == fields[name].value
            elif name == "issue_date":
                assert str(parse_date(inside)) == fields[name].value, inside
            else:
                assert fields[name].value in inside.replace(".", "").upper(), (name, inside)

        # The QR code: the box holds the code, which decodes to the same invoice.
        qr_pdf = render_pdf(with_qr)
        fields = _located(read(qr_pdf, engines)[0])
        assert fields["cufe"].source == ocr_pb2.FIELD_SOURCE_QR
        rendered = pdfium.PdfDocument(qr_pdf)[0].render(scale=150 / 72).to_pil()
        (code,) = zxingcpp.read_barcodes(_crop(rendered, fields["cufe"].box, pad=0.02))
        assert (parse_dian_qr(code.text) or {}).get("number") == with_qr.number

        # A scan turned a quarter: the box is on the page as uploaded.
        upright = Image.open(io.BytesIO(scan(pdf, 3)))
        turned = upright.rotate(90, expand=True)
        buffer = io.BytesIO()
        turned.save(buffer, "PNG")
        reading, pages, _ = read(buffer.getvalue(), engines)
        fields = _located(reading)
        with engines.engine() as engine:
            api = engine.page
            for name in ("number", "total"):
                assert fields[name].source == ocr_pb2.FIELD_SOURCE_OCR
                piece = _crop(turned, fields[name].box, pad=0.012).rotate(pages[0].rotation, expand=True)
                api.SetImage(piece)
                text = api.GetUTF8Text()
                if name == "total":  # the margin may catch a neighbour's digits: one of the amounts is it
                    amounts = {f"{parse_amount(a):.2f}" for a in re.findall(r"\d[\d.,]*\d", text)}
                    assert fields[name].value in amounts, text
                else:
                    assert fields[name].value in text.replace(" ", "").upper(), text
    finally:
        engines.close()


def test_banners_printed_white_on_dark_are_turned_dark_on_white() -> None:
    from PIL import Image, ImageDraw, ImageStat

    from services.ocr.reading import uninverted

    page = Image.new("L", (1600, 2200), 250)
    draw = ImageDraw.Draw(page)
    draw.rectangle((100, 300, 750, 345), fill=30)  # "VENDEDOR" banner
    draw.rectangle((850, 300, 1500, 345), fill=30)  # "CLIENTE" banner beside it
    for x in range(130, 300, 12):  # white strokes of its letters
        draw.rectangle((x, 312, x + 2, 334), fill=250)
    draw.rectangle((100, 600, 1500, 603), fill=0)  # a rule: not a banner
    draw.text((100, 700), "Subtotal $ 100.000,00", fill=0)
    turned = uninverted(page)
    assert ImageStat.Stat(turned.crop((100, 300, 751, 346))).mean[0] > 200, "the banner is light now"
    assert turned.getpixel((131, 320)) < 50, "and its letters dark"
    assert turned.getpixel((800, 320)) == 250, "the paper between the two banners stays as it was"
    assert turned.crop((0, 400, 1600, 2200)).tobytes() == page.crop((0, 400, 1600, 2200)).tobytes()
    night = Image.new("L", (1600, 2200), 40)  # a photograph taken in the dark: nothing to turn
    assert uninverted(night).tobytes() == night.tobytes()
