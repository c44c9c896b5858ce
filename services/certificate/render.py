"""The certificate as a PDF page (reportlab): BMC's letterhead, the
registered operation, its lines (continued on further pages when long), the
legal basis and a verification block with a QR code.

Fonts are Bitstream Vera, shipped with reportlab and embedded in every
file, so Spanish accents print the same on any reader."""

from __future__ import annotations

import datetime as dt
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reportlab
from reportlab import rl_config
from reportlab.graphics.barcode import qrencoder
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.certificate.domain import (
    ISSUER_NAME,
    ISSUER_NIT,
    LEGAL_BASIS,
    InvoiceFacts,
    PeriodicFacts,
    period_bounds,
)
from services.dian.calendar import COLOMBIA
from services.dian.money import pesos

PAGE_SIZES = {"A4": A4, "LETTER": LETTER}
NAVY = colors.HexColor("#0B2E59")
GREEN = colors.HexColor("#2E7D32")
_FONTS = Path(reportlab.__file__).parent / "fonts"


def register_fonts() -> None:
    if "Vera" in pdfmetrics.getRegisteredFontNames():
        return
    # Binary (compressed) streams: ASCII85 only makes files bigger and slower to write.
    rl_config.useA85 = 0
    for name, file in (("Vera", "Vera.ttf"), ("Vera-Bold", "VeraBd.ttf"), ("Vera-Italic", "VeraIt.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(_FONTS / file)))
    pdfmetrics.registerFontFamily("Vera", normal="Vera", bold="Vera-Bold", italic="Vera-Italic", boldItalic="Vera-Bold")


@dataclass(frozen=True)
class CertificateSheet:
    """Everything printed on a certificate, of one invoice or of a period."""

    number: str
    issue_time: dt.datetime
    verification_code: str
    verification_url: str
    facts: InvoiceFacts | PeriodicFacts
    page_size: str = "A4"


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName="Vera", fontSize=9, leading=12)
    return {
        "base": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=10, textColor=colors.HexColor("#444444")),
        "title": ParagraphStyle("title", parent=base, fontName="Vera-Bold", fontSize=15, leading=19, textColor=NAVY),
        "heading": ParagraphStyle(
            "heading", parent=base, fontName="Vera-Bold", fontSize=10, textColor=NAVY, spaceBefore=6
        ),
        "legal": ParagraphStyle("legal", parent=base, fontName="Vera-Italic", fontSize=8, leading=11),
    }


class QrCode(Flowable):
    """A QR code drawn as one filled path (a rectangle per run of dark
    modules), with the 4-module quiet zone readers need: far cheaper than
    reportlab's widget, which draws every module as its own shape."""

    def __init__(self, data: str, size: float) -> None:
        super().__init__()
        self.width = self.height = size
        code = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)  # None: the smallest version that fits
        code.addData(data)
        code.make()
        self._modules: list[list[bool]] = [[bool(m) for m in row] for row in code.modules]

    def draw(self) -> None:
        count = len(self._modules)
        box = self.width / (count + 8)
        path = self.canv.beginPath()
        for r, row in enumerate(self._modules):
            c = 0
            for dark, run in itertools.groupby(row):
                length = len(list(run))
                if dark:
                    path.rect((c + 4) * box, self.height - (r + 5) * box, length * box, box)
                c += length
        self.canv.setFillColor(colors.black)
        self.canv.drawPath(path, stroke=0, fill=1)


def _grid(rows: Sequence[list[Any]], widths: list[float], header: bool = False) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    style: list[Any] = [
        ("FONT", (0, 0), (-1, -1), "Vera", 8.5),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#B0BEC5")),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
    ]
    if header:
        style += [("BACKGROUND", (0, 0), (-1, 0), NAVY), ("TEXTCOLOR", (0, 0), (-1, 0), colors.white)]
        style += [("FONT", (0, 0), (-1, 0), "Vera-Bold", 8.5), ("ALIGN", (3, 1), (-1, -1), "RIGHT")]
    else:
        style += [
            ("FONT", (0, 0), (0, -1), "Vera-Bold", 8.5),
            ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#ECEFF1")),
        ]
    table.setStyle(TableStyle(style))
    return table


def _invoice_body(f: InvoiceFacts, s: dict[str, ParagraphStyle], width: float) -> list[Flowable]:
    registered = f.registration_time.astimezone(COLOMBIA)
    return [
        Paragraph("CERTIFICADO DE REGISTRO DE FACTURA", s["title"]),
        Paragraph(
            f"La {ISSUER_NAME} certifica que la factura electrónica descrita a continuación fue registrada en su "
            f"sistema de registro de facturas el {registered:%d/%m/%Y} a las {registered:%H:%M} (hora de Colombia), "
            f"con el número de registro <b>{f.registration_number}</b>.",
            s["base"],
        ),
        Spacer(1, 4 * mm),
        Paragraph("Operación registrada", s["heading"]),
        _grid(
            [
                ["Factura", f.number],
                ["CUFE", Paragraph(f.cufe, s["small"])],
                ["Fecha de emisión", f"{f.issue_date:%d/%m/%Y}"],
                ["Vendedor", f"{f.seller.name} — {f.seller.display_id}"],
                ["Comprador", f"{f.buyer.name} — {f.buyer.display_id}"],
                ["Registro BMC", f"{f.registration_number} · {registered:%d/%m/%Y %H:%M}"],
                ["Sociedad comisionista", f.broker.removeprefix("brokers/")],
            ],
            [42 * mm, width - 42 * mm],
        ),
        Paragraph("Productos", s["heading"]),
        _grid(
            [["#", "Código", "Descripción", "Cantidad", "Valor"]]
            + [
                [
                    str(line.number),
                    line.product_code,
                    Paragraph(line.description or "—", s["small"]),
                    f"{line.quantity.normalize():f} {line.unit_code}",
                    pesos(line.amount),
                ]
                for line in f.lines
            ],
            [8 * mm, 32 * mm, width - 105 * mm, 28 * mm, 37 * mm],
            header=True,
        ),
        Spacer(1, 2 * mm),
        _grid(
            [
                ["Subtotal", pesos(f.subtotal)],
                ["IVA", pesos(f.vat)],
                ["Total de la factura", pesos(f.total)],
                ["Comisión BMC cobrada (IVA incluido)", pesos(f.commission)],
            ],
            [width - 45 * mm, 45 * mm],
        ),
    ]


def _periodic_body(f: PeriodicFacts, s: dict[str, ParagraphStyle], width: float) -> list[Flowable]:
    first, after = period_bounds(f.year, f.month)
    through = f"por medio de la sociedad comisionista {f.broker.removeprefix('brokers/')}" if f.broker else ""
    return [
        Paragraph("CERTIFICADO DE OPERACIONES REGISTRADAS", s["title"]),
        Paragraph(
            f"La {ISSUER_NAME} certifica que {f.buyer.name} ({f.buyer.display_id}) registró en su sistema de registro "
            f"de facturas {through} las {len(f.operations)} operaciones siguientes durante {f.label} "
            f"(del {first:%d/%m/%Y} al {after - dt.timedelta(days=1):%d/%m/%Y}).",
            s["base"],
        ),
        Spacer(1, 4 * mm),
        Paragraph("Operaciones registradas", s["heading"]),
        _grid(
            [["Factura", "Emisión", "Vendedor", "Registro", "Total", "Comisión"]]
            + [
                [
                    o.invoice_number,
                    f"{o.issue_date:%d/%m/%Y}",
                    Paragraph(f"{o.seller.name}<br/>{o.seller.display_id}", s["small"]),
                    Paragraph(f"{o.registration_number}<br/>{o.registration_date:%d/%m/%Y}", s["small"]),
                    pesos(o.total),
                    pesos(o.commission),
                ]
                for o in f.operations
            ],
            [30 * mm, 20 * mm, width - 146 * mm, 30 * mm, 36 * mm, 30 * mm],
            header=True,
        ),
        Spacer(1, 2 * mm),
        _grid(
            [
                ["Operaciones", str(len(f.operations))],
                ["Valor total de las facturas", pesos(f.total)],
                ["Comisiones BMC cobradas (IVA incluido)", pesos(f.commission)],
            ],
            [width - 45 * mm, 45 * mm],
        ),
    ]


def render(sheet: CertificateSheet) -> bytes:
    """The unsigned PDF."""
    register_fonts()
    s, f = _styles(), sheet.facts
    size = PAGE_SIZES[sheet.page_size]
    width = size[0] - 36 * mm
    local = sheet.issue_time.astimezone(COLOMBIA)

    def letterhead(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFillColor(NAVY)
        canvas.rect(0, size[1] - 22 * mm, size[0], 22 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        canvas.setFont("Vera-Bold", 14)
        canvas.drawString(18 * mm, size[1] - 11 * mm, ISSUER_NAME)
        canvas.setFont("Vera", 8.5)
        canvas.drawString(18 * mm, size[1] - 16.5 * mm, f"NIT {ISSUER_NIT} · Sistema de registro de facturas")
        canvas.drawRightString(size[0] - 18 * mm, size[1] - 11 * mm, f"Certificado {sheet.number}")
        canvas.drawRightString(size[0] - 18 * mm, size[1] - 16.5 * mm, f"Verificación: {sheet.verification_code}")
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.setFont("Vera", 7)
        canvas.drawString(18 * mm, 10 * mm, f"Verifique este certificado en {sheet.verification_url}")
        canvas.drawRightString(size[0] - 18 * mm, 10 * mm, f"Página {doc.page}")
        canvas.restoreState()

    body = _invoice_body(f, s, width) if isinstance(f, InvoiceFacts) else _periodic_body(f, s, width)
    story: list[Flowable] = [
        *body,
        Paragraph("Fundamento legal", s["heading"]),
        Paragraph(LEGAL_BASIS, s["legal"]),
        Spacer(1, 4 * mm),
    ]
    verification = Table(
        [
            [
                QrCode(sheet.verification_url, 30 * mm),
                [
                    Paragraph("Verificación", s["heading"]),
                    Paragraph(f"Código: <b>{sheet.verification_code}</b>", s["base"]),
                    Paragraph(f"Dirección: {sheet.verification_url}", s["small"]),
                    Paragraph(f"Emitido: {local:%d/%m/%Y %H:%M:%S} (hora de Colombia)", s["small"]),
                    Paragraph(f"Huella SHA-256 del contenido certificado: {f.digest()}", s["small"]),
                    Paragraph(
                        "Documento firmado digitalmente por la Bolsa Mercantil de Colombia. Cualquier modificación "
                        "invalida la firma; el SHA-256 del archivo se consulta en la verificación.",
                        s["small"],
                    ),
                ],
            ]
        ],
        colWidths=[34 * mm, width - 34 * mm],
    )
    verification.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Vera", 8),
                ("BOX", (0, 0), (-1, -1), 0.8, GREEN),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(verification)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=size,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=30 * mm,
        bottomMargin=18 * mm,
        title=f"Certificado de registro {sheet.number}",
        author=ISSUER_NAME,
        subject=f.summary,
        creator="BMC Registry",
        initialFontName="Vera",  # not Helvetica: every font of the file is embedded
    )
    doc.build(story, onFirstPage=letterhead, onLaterPages=letterhead)
    return buffer.getvalue()
