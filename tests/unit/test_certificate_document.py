"""The certificate document, opened as a reader would: its text, its QR
code, its signature (pyHanko's validator), its permissions and metadata,
its first page rasterised; and the small rules of numbering and codes."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
import zxingcpp
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from services.certificate.domain import (
    InvoiceFacts,
    LineFacts,
    OperationFacts,
    PartyFacts,
    PeriodicFacts,
    certificate_number,
    normalise_code,
    verification_code,
)
from services.certificate.render import CertificateSheet, render
from services.certificate.sealing import Sealer, SigningKey
from services.dian.money import pesos
from services.kit.pki import DevPki

D = Decimal
CUFE = "8bb918b19ba22a694f1da11c643b5e9de39adf60311cf179179e9b33381030bcd4c3c3f156c506ed5908f9276f5bd9b4"


def facts(lines: int = 2) -> InvoiceFacts:
    return InvoiceFacts(
        invoice="invoices/abc",
        broker="brokers/acme",
        number="SETP990000002",
        cufe=CUFE,
        issue_date=dt.date(2026, 11, 20),
        registration_number="2026-00000042",
        registration_time=dt.datetime(2026, 11, 21, 15, 30, tzinfo=dt.UTC),
        seller=PartyFacts("Agropecuaria El Llano S.A.S.", "NIT", "900508908", "9"),
        buyer=PartyFacts("Molinos del Centro S.A.", "NIT", "860034313", "7"),
        subtotal=D("12500000.00"),
        vat=D("625000.00"),
        total=D("13125000.00"),
        lines=[
            LineFacts(n, "MAIZ-AMARILLO", "Maíz amarillo tecnificado, cosecha nacional", D(10), "TNE", D("1250000.00"))
            for n in range(1, lines + 1)
        ],
        commission=D(31163),
    )


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sealer, Path]:
    pki = DevPki(tmp_path_factory.mktemp("pki"))
    pki.identity("document-signer", "Bolsa Mercantil de Colombia S.A.")
    key = SigningKey(pki.directory / "document-signer.pem", pki.directory / "document-signer-key.pem", (pki.ca_path,))
    return Sealer(key), pki.ca_path


def issue(sealer: Sealer, lines: int = 2) -> tuple[bytes, CertificateSheet]:
    code = verification_code(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    sheet = CertificateSheet(
        "BMC-CR-2026-00000042", dt.datetime(2026, 11, 21, 16, tzinfo=dt.UTC), code,
        f"https://registro.bmc.com.co/v1/verifications/{code}", facts(lines),
    )  # fmt: skip
    return sealer.sign(render(sheet), sheet.number, "Factura SETP990000002"), sheet


def text_of(pdf: bytes) -> str:
    document = pdfium.PdfDocument(pdf, password="")
    return "\n".join(document[i].get_textpage().get_text_range() for i in range(len(document)))


def validation(pdf: bytes, ca: Path) -> tuple[bool, bool, bool]:
    reader = PdfFileReader(io.BytesIO(pdf))
    reader.decrypt("")
    status = validate_pdf_signature(
        reader.embedded_signatures[0], ValidationContext(trust_roots=[load_cert_from_pemder(str(ca))])
    )
    return status.intact, status.valid, status.trusted


def test_the_certificate_states_what_was_registered(signing: tuple[Sealer, Path]) -> None:
    pdf, sheet = issue(signing[0])
    text = " ".join(text_of(pdf).split())
    for expected in (
        "CERTIFICADO DE REGISTRO DE FACTURA", "SETP990000002", "900508908-9", "860034313-7",
        "Molinos del Centro S.A.", "$ 12.500.000,00", "$ 625.000,00", "$ 13.125.000,00", "$ 31.163,00",
        "2026-00000042", "BMC-CR-2026-00000042", sheet.verification_code, "1.2.4.6.10", "Maíz amarillo",
    ):  # fmt: skip
        assert expected in text, expected
    assert CUFE in text.replace(" ", "")  # the CUFE wraps inside its cell


def test_the_qr_code_leads_to_the_verification_page(signing: tuple[Sealer, Path]) -> None:
    pdf, sheet = issue(signing[0])
    image = pdfium.PdfDocument(pdf, password="")[0].render(scale=3).to_pil()
    assert [r.text for r in zxingcpp.read_barcodes(image)] == [sheet.verification_url]


def test_the_signature_validates_and_one_flipped_byte_breaks_it(signing: tuple[Sealer, Path]) -> None:
    sealer, ca = signing
    pdf, _ = issue(sealer)
    assert validation(pdf, ca) == (True, True, True)
    # Flip a byte inside the signed content (the page stream, well before the signature).
    tampered = bytearray(pdf)
    tampered[len(pdf) // 3] ^= 0x01
    try:
        intact, _, _ = validation(bytes(tampered), ca)
    except Exception:
        intact = False
    assert not intact


def test_printing_is_allowed_and_modifying_is_not(signing: tuple[Sealer, Path]) -> None:
    pdf, sheet = issue(signing[0])
    with pikepdf.open(io.BytesIO(pdf)) as document:
        assert document.is_encrypted
        assert document.allow.print_highres
        assert not document.allow.modify_other
        assert not document.allow.modify_annotation
        meta = document.open_metadata()
        assert meta["dc:title"] == f"Certificado de registro {sheet.number}"
        assert sheet.number in str(meta["pdf:Keywords"])
        fonts = {str(f.get("/BaseFont")) for page in document.pages for f in page.Resources.Font.values()}
        assert all("Vera" in font for font in fonts), fonts
        embedded = [f for page in document.pages for f in page.Resources.Font.values() if f.get("/FontDescriptor")]
        assert embedded, "fonts are embedded"


def test_the_page_renders_and_long_invoices_continue_on_more_pages(signing: tuple[Sealer, Path]) -> None:
    pdf, _ = issue(signing[0], lines=2)
    page = pdfium.PdfDocument(pdf, password="")[0].render(scale=1).to_pil().convert("L")
    histogram = page.histogram()
    dark = sum(histogram[:128]) / sum(histogram)
    assert 0.03 < dark < 0.5, f"the page is blank or black ({dark:.1%} dark pixels)"
    long_pdf, _ = issue(signing[0], lines=80)
    document = pdfium.PdfDocument(long_pdf, password="")
    assert len(document) >= 3
    assert "Página 3" in document[2].get_textpage().get_text_range()


def test_codes_numbers_and_amounts() -> None:
    code = verification_code(bytes(range(8)))
    assert len(code) == 14
    assert code[4] == code[9] == "-"
    assert not set(code) & set("ILOU")
    assert normalise_code(code.lower().replace("-", "")) == code
    assert normalise_code("o1l2-iabc-defg") == "0112-1ABC-DEFG"
    assert verification_code(b"\xff" * 8) != verification_code(b"\x00" * 8)
    with pytest.raises(ValueError, match="8 bytes"):
        verification_code(b"short")
    assert certificate_number(2026, 42) == "BMC-CR-2026-00000042"
    assert pesos(D("1234567.5")) == "$ 1.234.567,50"
    assert pesos(D(0)) == "$ 0,00"
    assert facts().digest() == facts().digest() != facts(3).digest()


def test_a_periodic_certificate_lists_every_operation(signing: tuple[Sealer, Path]) -> None:
    buyer = PartyFacts("Molinos del Centro S.A.", "NIT", "860034313", "7")
    seller = PartyFacts("Agropecuaria El Llano S.A.S.", "NIT", "900508908", "9")
    operations = [
        OperationFacts(
            f"SETP99{n:04d}", dt.date(2026, 11, 2), seller, f"2026-{n:08d}", dt.date(2026, 11, 3), D(1000 * n), D(n)
        )
        for n in range(1, 61)
    ]
    periodic = PeriodicFacts("brokers/acme", buyer, 2026, 11, operations)
    code = verification_code(bytes(8))
    sheet = CertificateSheet(
        "BMC-CR-2026-00000043", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), code, f"https://x/{code}", periodic
    )
    pdf = signing[0].sign(render(sheet), sheet.number, periodic.summary)
    text = " ".join(text_of(pdf).split())
    assert "CERTIFICADO DE OPERACIONES REGISTRADAS" in text
    assert "noviembre de 2026" in text
    assert all(o.invoice_number in text for o in operations)
    assert pesos(periodic.total) in text  # 1,830,000: the sum of 1,000 × 1..60
    assert periodic.total == D(1_830_000)
    assert validation(pdf, signing[1]) == (True, True, True)
    assert len(pdfium.PdfDocument(pdf, password="")) >= 2
