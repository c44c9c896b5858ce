"""A test set for the OCR service: Colombian-style invoices in several
layouts rendered as vector PDFs (with and without the DIAN QR), the same
pages as 200-dpi scans (rotated a little, noisy) and as phone-like JPEGs,
each with the fields a reader should find.

`python -m services.ocr.samples OUT_DIR` writes them with `expected.json`."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageFilter
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from services.certificate.render import QrCode, register_fonts
from services.dian.cufe import TEST_ENVIRONMENT_KEY, CufeFields
from services.dian.money import pesos
from services.dian.nit import check_digit

TEST_KEY = TEST_ENVIRONMENT_KEY  # DIAN's habilitación technical key (domain.md)
SELLERS = [
    ("Agropecuaria El Llano S.A.S.", "900508908"),
    ("Cooperativa de Caficultores del Huila", "891100673"),
    ("Ganadería La Esperanza Ltda.", "800197268"),
    ("Arrocera San José S.A.", "860034313"),
]
BUYERS = [
    ("Molinos del Centro S.A.", "860071250"),
    ("Comercializadora Andina de Granos S.A.S.", "900108281"),
    ("Frigorífico del Caribe S.A.", "890903938"),
]
PRODUCTS = [
    ("Maíz amarillo tecnificado", "TNE", Decimal("1250000")),
    ("Café pergamino seco", "KGM", Decimal("15600")),
    ("Novillo gordo en pie", "KGM", Decimal("8900")),
    ("Arroz paddy verde", "TNE", Decimal("1480000")),
    ("Papa pastusa", "KGM", Decimal("1850")),
    ("Leche cruda de vaca", "LTR", Decimal("2100")),
]
LAYOUTS = ("classic", "compact", "table", "letter")


@dataclass(frozen=True)
class SampleLine:
    description: str
    quantity: Decimal
    unit: str
    price: Decimal

    @property
    def total(self) -> Decimal:
        return (self.quantity * self.price).quantize(Decimal("0.01"))


class Priced:
    """A generated invoice's amounts, from its lines and VAT rate."""

    lines: tuple[SampleLine, ...]
    vat_rate: Decimal

    @property
    def subtotal(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal(0))

    @property
    def vat(self) -> Decimal:
        return (self.subtotal * self.vat_rate / 100).quantize(Decimal("0.01"))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.vat


def qr_payload(fields: CufeFields, cufe: str) -> str:
    """The DIAN QR code's text for an invoice (its catalogue host by environment)."""
    host = "catalogo-vpfe-hab" if fields.environment == 2 else "catalogo-vpfe"
    return (
        f"NumFac: {fields.number}\nFecFac: {fields.issue_date.isoformat()}\nHorFac: {fields.issue_time}\n"
        f"NitFac: {fields.issuer_nit}\nDocAdq: {fields.buyer_id}\nValFac: {fields.line_extension:.2f}\n"
        f"ValIva: {fields.iva:.2f}\nValOtroIm: 0.00\nValTolFac: {fields.payable:.2f}\nCUFE: {cufe}\n"
        f"QRCode: https://{host}.dian.gov.co/document/searchqr?documentkey={cufe}"
    )


@dataclass(frozen=True)
class SampleInvoice(Priced):
    number: str
    issue_date: dt.date
    issue_time: str
    seller: tuple[str, str]
    buyer: tuple[str, str]
    lines: tuple[SampleLine, ...]
    vat_rate: Decimal
    layout: str
    with_qr: bool
    technical_key: str = TEST_KEY  # DIAN's test environment's unless an issuer's own (production) key is given
    environment: int = 2

    @property
    def cufe(self) -> str:
        return self.cufe_fields().cufe(self.technical_key)

    def qr_text(self) -> str:
        return qr_payload(self.cufe_fields(), self.cufe)

    def cufe_fields(self) -> CufeFields:
        return CufeFields(
            self.number, self.issue_date, self.issue_time, self.subtotal, self.vat, Decimal(0), Decimal(0),
            self.total, self.seller[1], self.buyer[1], self.environment,
        )  # fmt: skip

    def expected(self) -> dict[str, str]:
        return {
            "number": self.number,
            "issue_date": self.issue_date.isoformat(),
            "issue_time": self.issue_time,
            "seller_nit": self.seller[1],
            "seller_nit_dv": str(check_digit(self.seller[1])),
            "buyer_id": self.buyer[1],
            "subtotal": f"{self.subtotal:.2f}",
            "vat": f"{self.vat:.2f}",
            "total": f"{self.total:.2f}",
            "cufe": self.cufe,
        }


def sample_invoices(count: int = 12, seed: int = 7) -> list[SampleInvoice]:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    found = []
    for n in range(count):
        lines = tuple(
            SampleLine(desc, Decimal(rng.randint(1, 40)), unit, price)
            for desc, unit, price in rng.sample(PRODUCTS, rng.randint(1, 4))
        )
        found.append(
            SampleInvoice(
                number=f"{rng.choice(['FE', 'SETP', 'FV'])}{990000000 + rng.randint(1, 99999)}",
                issue_date=dt.date(2026, 11, 1) + dt.timedelta(days=rng.randint(0, 25)),
                issue_time=f"{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}:00-05:00",
                seller=rng.choice(SELLERS),
                buyer=rng.choice(BUYERS),
                lines=lines,
                vat_rate=rng.choice([Decimal(0), Decimal(5), Decimal(19)]),
                layout=LAYOUTS[n % len(LAYOUTS)],
                with_qr=n % 3 != 2,  # one in three without a QR: the text must carry it
            )
        )
    return found


def render_pdf(invoice: SampleInvoice) -> bytes:
    """The invoice as a vector PDF (a text layer, fonts embedded)."""
    register_fonts()
    size = LETTER if invoice.layout == "letter" else A4
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=size)
    width, height = size
    left, y = 18 * mm, height - 20 * mm
    seller_name, seller_nit = invoice.seller
    buyer_name, buyer_nit = invoice.buyer

    def text(x: float, line: str, font: str = "Vera", size_pt: float = 9.5) -> None:
        canvas.setFont(font, size_pt)
        canvas.drawString(x, y, line)

    if invoice.layout in ("classic", "letter"):
        text(left, seller_name, "Vera-Bold", 14)
        y -= 6 * mm
        text(left, f"NIT: {int(seller_nit):,}-{check_digit(seller_nit)}".replace(",", "."))
        y -= 5 * mm
        text(left, "Responsable de IVA · Régimen común")
        y -= 10 * mm
        text(left, f"FACTURA ELECTRÓNICA DE VENTA No. {invoice.number}", "Vera-Bold", 12)
        y -= 6 * mm
        text(left, f"Fecha de emisión: {invoice.issue_date:%d/%m/%Y}   Hora: {invoice.issue_time[:8]}")
        y -= 9 * mm
        text(left, f"Cliente: {buyer_name}")
        y -= 5 * mm
        text(left, f"NIT: {int(buyer_nit):,}-{check_digit(buyer_nit)}".replace(",", "."))
    else:
        text(left, f"Factura electrónica de venta N° {invoice.number}", "Vera-Bold", 13)
        y -= 7 * mm
        text(left, f"{seller_name} — NIT {seller_nit}-{check_digit(seller_nit)}")
        y -= 5 * mm
        text(left, f"Fecha y hora de expedición: {invoice.issue_date.isoformat()} {invoice.issue_time[:8]}")
        y -= 8 * mm
        text(left, f"Adquiriente: {buyer_name}  NIT {buyer_nit}-{check_digit(buyer_nit)}")
    y -= 12 * mm
    columns = [left, left + 95 * mm, left + 115 * mm, left + 145 * mm]
    canvas.setFillColor(colors.HexColor("#EEEEEE"))
    canvas.rect(left - 2 * mm, y - 2 * mm, width - 32 * mm, 7 * mm, stroke=0, fill=1)
    canvas.setFillColor(colors.black)
    for x, title in zip(columns, ("Descripción", "Cantidad", "Valor unitario", "Valor total"), strict=True):
        text(x, title, "Vera-Bold", 9)
    for line in invoice.lines:
        y -= 7 * mm
        text(columns[0], line.description)
        text(columns[1], f"{line.quantity} {line.unit}")
        text(columns[2], pesos(line.price))
        text(columns[3], pesos(line.total))
    y -= 12 * mm
    for label, amount in (
        ("Subtotal", invoice.subtotal), (f"IVA {invoice.vat_rate}%", invoice.vat), ("Total a pagar", invoice.total),
    ):  # fmt: skip
        text(columns[2] - 10 * mm, f"{label}:", "Vera-Bold" if label.startswith("Total") else "Vera")
        text(columns[3], pesos(amount), "Vera-Bold" if label.startswith("Total") else "Vera")
        y -= 6 * mm
    y -= 8 * mm
    text(left, "CUFE:", "Vera-Bold", 8)
    y -= 4 * mm
    text(left, invoice.cufe[:48], "Vera", 8)
    y -= 4 * mm
    text(left, invoice.cufe[48:], "Vera", 8)
    if invoice.with_qr:
        qr = QrCode(invoice.qr_text(), 38 * mm)
        qr.wrapOn(canvas, 38 * mm, 38 * mm)
        qr.drawOn(canvas, width - 58 * mm, 22 * mm)
    canvas.setFont("Vera", 7)
    canvas.drawString(left, 12 * mm, "Representación gráfica de la factura electrónica · Software propio")
    canvas.save()
    return buffer.getvalue()


def page_image(pdf: bytes, dpi: int) -> Image.Image:
    image: Image.Image = pdfium.PdfDocument(pdf)[0].render(scale=dpi / 72).to_pil().convert("RGB")
    return image


def scan(pdf: bytes, seed: int, dpi: int = 200) -> bytes:
    """A 200-dpi scan: tilted by up to 2°, grey, speckled; PNG."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    image = page_image(pdf, dpi).convert("L")
    image = image.rotate(rng.uniform(-2, 2), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    # Seeded speckle (PIL's effect_noise draws from an unseeded C generator): uniform
    # bytes squeezed around mid-grey to the spread of Gaussian noise of sigma 18.
    noise = Image.frombytes("L", image.size, rng.randbytes(image.width * image.height))
    noise = noise.point(lambda v: 128 + (v - 128) * 18 // 74)
    image = Image.blend(image, noise, 0.08)
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(dpi, dpi))
    return out.getvalue()


def photo(pdf: bytes, seed: int) -> bytes:
    """A phone-like JPEG: softer, warmer, a little tilted, compressed."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    image = page_image(pdf, 220)
    image = image.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(235, 230, 220))
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=72)
    return out.getvalue()


FORMS = (
    "vector PDF", "scan 200 dpi", "scan 150 dpi", "scan 300 dpi", "image-only PDF", "photo",
    "JPEG q40", "blurred", "low contrast", "skewed 4 deg",
)  # fmt: skip


def as_form(pdf: bytes, form: str, seed: int) -> bytes:
    """The document as a user might upload it: the PDF itself, a scan at some
    resolution, a scan wrapped in a PDF with no text layer, a phone photo, or
    a 200-dpi scan gone through one of the degradations offices produce."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    if form == "vector PDF":
        return pdf
    if form == "photo":
        return photo(pdf, seed)
    if form.startswith("scan "):
        return scan(pdf, seed, int(form.split()[1]))
    image = Image.open(io.BytesIO(scan(pdf, seed)))
    out = io.BytesIO()
    if form == "image-only PDF":
        image.convert("RGB").save(out, "PDF", resolution=200)
    elif form == "JPEG q40":
        image.save(out, "JPEG", quality=40)
    elif form == "blurred":
        image.filter(ImageFilter.GaussianBlur(1.1)).save(out, "PNG")
    elif form == "low contrast":
        image.point(lambda v: 95 + v * 90 // 255).save(out, "PNG")  # ink at 95, paper at 185
    elif form == "skewed 4 deg":
        turn = rng.choice((-1, 1)) * rng.uniform(3.5, 4.5)
        image.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255).save(out, "PNG")
    else:
        raise ValueError(f"unknown form {form!r}; one of {FORMS}")
    return out.getvalue()


def write(out: Path, count: int = 12) -> list[dict[str, object]]:
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for n, invoice in enumerate(sample_invoices(count)):
        pdf = render_pdf(invoice)
        stem = f"{n:02d}-{invoice.layout}"
        files = {"pdf": f"{stem}.pdf", "scan": f"{stem}-scan.png", "photo": f"{stem}-photo.jpg"}
        (out / files["pdf"]).write_bytes(pdf)
        (out / files["scan"]).write_bytes(scan(pdf, n))
        (out / files["photo"]).write_bytes(photo(pdf, n))
        manifest.append({"files": files, "with_qr": invoice.with_qr, "expected": invoice.expected()})
    (out / "expected.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "out/ocr-samples"))
