"""A test set that measures whether the OCR generalises: Colombian electronic
invoices in sixteen layout families, each modelled on what a kind of
billing software prints (letterheads, inverse-video banners, two-column
Emisor/Adquiriente boxes, "Señores" letters, grids of labelled cells, POS
rolls...), varied per invoice in label wording, number, NIT, date, time and
amount notation, CUFE placement and totals order, and carrying on every page
the decoys a reader must not take for a party or a total: the technology
provider's NIT, the numbering resolution, a purchase order, a bank account,
phones and street addresses.

The split between the families the reader is developed on (`DEVELOPMENT`)
and those it is measured on (`HELD_OUT`) is fixed here: a reader tuned to
its own samples shows in the gap between the two figures.

    python -m services.ocr.families OUT_DIR [--per-family N] [--held-out]

writes each invoice as a vector PDF and `expected.json`."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from services.certificate.render import QrCode, register_fonts
from services.dian.cufe import CufeFields
from services.dian.nit import check_digit
from services.ocr.domain import MONTHS, Reading
from services.ocr.samples import TEST_KEY, Priced, SampleLine, qr_payload

COMPANIES = (
    "Agropecuaria El Llano S.A.S.", "Cooperativa de Caficultores del Huila", "Ganadería La Esperanza Ltda.",
    "Arrocera San José S.A.", "Molinos del Centro S.A.", "Comercializadora Andina de Granos S.A.S.",
    "Frigorífico del Caribe S.A.", "Avícola Santa Rita S.A.S.", "Palmeras de Tumaco Ltda.",
    "Inversiones Agrícolas del Tolima S.A.S.", "Lácteos La Pradera S.A.", "Distribuidora de Insumos Boyacá S.A.S.",
    "Trilladora Nariño Café S.A.S.", "Cacaos del Magdalena S.A.S.", "Hacienda Los Guaduales",
    "Procesadora de Alimentos del Valle S.A.",
)  # fmt: skip
PEOPLE = ("José Manuel Rincón Pardo", "María Fernanda Ospina", "Luis Alberto Quintero", "Ana Lucía Betancur")
PROVIDERS = (
    "Facturación Digital Andina S.A.S.", "Soluciones Contables en la Nube S.A.S.", "Documentos Electrónicos SAS",
    "Software Empresarial Integrado Ltda.",
)  # fmt: skip
BANKS = ("Bancolombia", "Banco de Bogotá", "Davivienda", "BBVA Colombia", "Banco Agrario de Colombia")
CITIES = ("Bogotá D.C.", "Medellín", "Neiva", "Villavicencio", "Ibagué", "Cali", "Barranquilla", "Pasto")
STREETS = ("Calle", "Carrera", "Avenida", "Transversal", "Diagonal")
PRODUCTS = (
    ("Maíz amarillo tecnificado", "TNE", 1_250_000), ("Café pergamino seco", "KGM", 15_600),
    ("Novillo gordo en pie", "KGM", 8_900), ("Arroz paddy verde", "TNE", 1_480_000), ("Papa pastusa", "KGM", 1_850),
    ("Leche cruda de vaca", "LTR", 2_100), ("Cacao en grano fermentado", "KGM", 19_800),
    ("Aceite crudo de palma", "TNE", 4_350_000), ("Fríjol cargamanto rojo", "KGM", 7_400),
    ("Sorgo grano", "TNE", 1_120_000), ("Plátano hartón verde", "KGM", 2_300), ("Caña panelera", "TNE", 310_000),
)  # fmt: skip
PREFIXES = ("FE", "FV", "FEV", "SETP", "F1", "FELE", "FAC", "BMC", "AGRO", "FCO")


def nit_number(rng: random.Random) -> str:
    return str(rng.choice((800, 811, 830, 860, 890, 891, 900, 901)) * 1_000_000 + rng.randint(0, 999_999))


@dataclass(frozen=True)
class Party:
    name: str
    number: str
    kind: str  # NIT or CC (a person's cédula: no check digit)
    address: str
    city: str
    phone: str
    email: str

    @property
    def dv(self) -> str:
        return str(check_digit(self.number)) if self.kind == "NIT" else ""


def _party(rng: random.Random, kind: str = "NIT") -> Party:
    name = rng.choice(COMPANIES if kind == "NIT" else PEOPLE)
    number = nit_number(rng) if kind == "NIT" else str(rng.randint(10_000_000, 1_099_999_999))
    street = f"{rng.choice(STREETS)} {rng.randint(1, 140)} # {rng.randint(1, 99)}-{rng.randint(1, 99)}"
    phone = rng.choice((f"601 {rng.randint(200, 799)} {rng.randint(1000, 9999)}", f"3{rng.randint(10, 23)} "
                        f"{rng.randint(100, 999)} {rng.randint(1000, 9999)}", f"(60{rng.randint(1, 8)}) "
                        f"{rng.randint(2000000, 8999999)}"))  # fmt: skip
    handle = "".join(c for c in name.split()[0].lower() if c.isascii() and c.isalpha())
    return Party(name, number, kind, street, rng.choice(CITIES), phone, f"facturacion@{handle}.com.co")


@dataclass(frozen=True)
class Decoys:
    """Numbers every page carries that are neither a party, the invoice number nor a total."""

    provider: Party
    resolution: str
    resolution_date: dt.date
    order: str
    bank: str
    account: str
    items_count: int

    def values(self) -> dict[str, str]:
        return {
            "provider_nit": self.provider.number,
            "resolution": self.resolution,
            "order": self.order,
            "account": self.account.replace("-", "").replace(" ", ""),
        }


@dataclass(frozen=True)
class FamilyInvoice(Priced):
    family: str
    prefix: str
    consecutive: int
    issue_date: dt.date
    issue_time: str  # HH:MM:SS
    due_date: dt.date
    seller: Party
    buyer: Party
    lines: tuple[SampleLine, ...]
    vat_rate: Decimal
    environment: int  # 1 production (issuer's own key), 2 DIAN's test environment (known key)
    technical_key: str
    with_qr: bool
    decoys: Decoys

    @property
    def number(self) -> str:
        return f"{self.prefix}{self.consecutive}"

    def cufe_fields(self) -> CufeFields:
        return CufeFields(
            self.number, self.issue_date, f"{self.issue_time}-05:00", self.subtotal, self.vat, Decimal(0), Decimal(0),
            self.total, self.seller.number, self.buyer.number, self.environment,
        )  # fmt: skip

    @property
    def cufe(self) -> str:
        return self.cufe_fields().cufe(self.technical_key)

    def qr_text(self) -> str:
        return qr_payload(self.cufe_fields(), self.cufe)

    def expected(self) -> dict[str, str]:
        found = {
            "number": self.number,
            "issue_date": self.issue_date.isoformat(),
            "issue_time": f"{self.issue_time}-05:00",
            "seller_nit": self.seller.number,
            "seller_nit_dv": self.seller.dv,
            "buyer_id": self.buyer.number,
            "subtotal": f"{self.subtotal:.2f}",
            "vat": f"{self.vat:.2f}",
            "total": f"{self.total:.2f}",
            "cufe": self.cufe,
        }
        if self.buyer.dv:
            found["buyer_id_dv"] = self.buyer.dv
        return found


# ---------------------------------------------------------------- notation


def dotted(number: str) -> str:
    return f"{int(number):,}".replace(",", ".")


def nit_text(party: Party, form: str) -> str:
    """How a family prints an identification: `900.508.908-9`, `900508908-9`,
    `900508908 9`, `900.508.908 - 9`; a cédula has no check digit."""
    if party.kind == "CC":
        return dotted(party.number) if form.startswith("dots") else party.number
    return {
        "dots-hyphen": f"{dotted(party.number)}-{party.dv}",
        "plain-hyphen": f"{party.number}-{party.dv}",
        "space": f"{party.number} {party.dv}",
        "dots-spaced": f"{dotted(party.number)} - {party.dv}",
        "column": party.number,  # the DV goes in a cell of its own
    }[form]


def money(amount: Decimal, form: str) -> str:
    whole, _, cents = f"{amount:,.2f}".partition(".")
    return {
        "co": f"$ {whole.replace(',', '.')},{cents}",
        "co-bare": f"{whole.replace(',', '.')},{cents}",
        "us": f"${whole}.{cents}",
        "cop": f"COP {whole.replace(',', '.')},{cents}",
        "co-whole": f"$ {whole.replace(',', '.')}",  # families that print whole pesos only sell whole-peso amounts
    }[form]


def date_text(day: dt.date, form: str) -> str:
    return {
        "dmy-slash": f"{day:%d/%m/%Y}",
        "iso": day.isoformat(),
        "dmy-dash": f"{day:%d-%m-%Y}",
        "long": f"{day.day} de {MONTHS[day.month - 1]} de {day.year}",
        "month-abbr": f"{day.day:02d}-{MONTHS[day.month - 1][:3]}-{day.year}",
        "ymd-slash": f"{day:%Y/%m/%d}",
        "month-first": f"{MONTHS[day.month - 1].capitalize()} {day.day} de {day.year}",
    }[form]


def time_text(time: str, form: str) -> str:
    hour, minute, second = (int(p) for p in time.split(":"))
    return {
        "24": time,
        "24-short": f"{hour:02d}:{minute:02d}",
        "ampm": f"{(hour - 1) % 12 + 1}:{minute:02d}:{second:02d} {'p. m.' if hour >= 12 else 'a. m.'}",
        "offset": f"{time}-05:00",
    }[form]


def number_text(invoice: FamilyInvoice, form: str) -> str:
    return {"joined": invoice.number, "space": f"{invoice.prefix} {invoice.consecutive}",
            "hyphen": f"{invoice.prefix}-{invoice.consecutive}"}[form]  # fmt: skip


# ---------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """What a kind of billing software fixes about its printout."""

    name: str
    resembles: str
    page: tuple[float, float] = A4
    font: tuple[str, str] = ("Vera", "Vera-Bold")
    header: str = "letterhead"  # letterhead | centered | banner | grid | compact | roll
    parties: str = "stacked"  # stacked | side | table | letter | cells
    labels: tuple[str, str] = ("Emisor", "Adquiriente")
    title: str = "FACTURA ELECTRÓNICA DE VENTA"
    number_label: str = "No."
    number_forms: tuple[str, ...] = ("joined",)
    nit_label: str = "NIT"
    nit_forms: tuple[str, ...] = ("dots-hyphen",)
    date_label: str = "Fecha de emisión"
    date_forms: tuple[str, ...] = ("dmy-slash",)
    time_label: str = "Hora"
    time_forms: tuple[str, ...] = ("24",)
    meta: str = "rows"  # rows | grid | inline
    money_forms: tuple[str, ...] = ("co",)
    totals: tuple[str, ...] = ("Subtotal", "IVA", "Total a pagar")
    totals_at: str = "right"  # right | left | grid
    cufe: str = "below"  # below | inline | beside-qr | one-line
    cufe_label: str = "CUFE:"
    inverse: bool = False  # headings in inverse video (white on black)
    table_header: tuple[str, ...] = ("Descripción", "Cant.", "Vr. unitario", "Vr. total")
    person_buyers: bool = False  # some invoices to people identified by cédula


FAMILIES: tuple[Family, ...] = (
    Family("letterhead", "a desktop accounting package's default sheet"),
    Family("banner-side", "a cloud invoicing service with a dark title band", header="banner", parties="side",
           labels=("Vendedor", "Comprador"), number_label="N°", number_forms=("space", "joined"),
           nit_forms=("plain-hyphen",), date_forms=("iso",), inverse=True, totals=("Total bruto", "IVA 19%",
           "Total factura")),
    Family("senores-letter", "a small-business template in a word processor", page=LETTER, header="centered",
           parties="letter", labels=("", "Señores"), number_label="Nro.", nit_forms=("dots-spaced",),
           date_label="Fecha", date_forms=("long",), time_forms=("ampm",), totals_at="left",
           totals=("Valor bruto", "Impuesto IVA", "Valor total"), cufe="inline", person_buyers=True),
    Family("grid-cells", "an ERP's boxed form with labels above values", header="grid", parties="cells",
           labels=("Facturador", "Adquiriente"), number_forms=("hyphen",), nit_forms=("column",),
           date_label="Fecha de expedición", date_forms=("dmy-dash",), meta="grid",
           totals=("Subtotal", "Total IVA", "Total documento"), totals_at="grid", cufe="beside-qr"),
    Family("pos-roll", "a point-of-sale roll, monospace", page=(80 * mm, 297 * mm), font=("Courier", "Courier-Bold"),
           header="roll", parties="stacked", labels=("", "Cliente"), number_label="Factura No.",
           number_forms=("space",), nit_forms=("plain-hyphen",), date_label="Fecha", date_forms=("dmy-slash",),
           time_forms=("24-short",), meta="inline", money_forms=("co-whole",), totals=("Subtotal", "IVA", "TOTAL"),
           totals_at="left", cufe="below", table_header=("Desc.", "Cant", "Precio", "Total")),
    Family("table-parties", "a billing module that prints parties as a two-column table", parties="table",
           labels=("Información del emisor", "Información del cliente"), number_label="Número",
           number_forms=("hyphen",),
           nit_label="NIT/CC", nit_forms=("dots-hyphen", "plain-hyphen"), date_label="Fecha factura",
           date_forms=("month-abbr",), totals=("Suma", "IVA", "Neto a pagar"), cufe="one-line",
           person_buyers=True),
    Family("helvetica-compact", "an older compact layout: name and NIT on one line", font=("Helvetica",
           "Helvetica-Bold"), header="compact", parties="stacked", labels=("", "Adquirente"),
           title="Factura electrónica de venta", number_label="N°", nit_forms=("plain-hyphen",),
           date_label="Fecha y hora de expedición", date_forms=("iso",), meta="inline",
           totals=("Subtotal", "IVA", "Total"), cufe="below"),
    Family("us-amounts", "a multinational's ERP printing US-style amounts", header="letterhead", parties="side",
           labels=("Emisor", "Receptor"), number_label="Invoice / Factura No.", nit_forms=("dots-hyphen",),
           date_label="Fecha de emisión", date_forms=("ymd-slash",), money_forms=("us",),
           totals=("Subtotal", "IVA 19%", "Total a pagar"), cufe="beside-qr"),
    Family("times-invoice", "a legal-looking template in a serif face", font=("Times-Roman", "Times-Bold"),
           header="centered", parties="stacked", labels=("Datos del emisor", "Datos del adquiriente"),
           number_label="No.", number_forms=("space",), nit_forms=("space",), date_label="Fecha de generación",
           date_forms=("dmy-slash",), time_label="Hora de generación", money_forms=("co-bare",),
           totals=("Total base gravable", "Total IVA", "Total a pagar"), cufe="below"),
    Family("banner-grid", "a cloud service's grid with inverse headings", header="banner", parties="cells",
           labels=("Vendedor", "Cliente"), number_label="No.", number_forms=("hyphen", "space"),
           nit_forms=("column",), date_label="Fecha emisión", date_forms=("dmy-dash",), meta="grid", inverse=True,
           totals=("Valor bruto", "IVA", "Valor a pagar"), totals_at="grid", cufe="one-line"),
    # ---- held out: never looked at while the reader was developed
    Family("prefijo-consecutivo", "software that prints the prefix and consecutive apart", header="grid",
           parties="side", labels=("Emisor", "Adquiriente"), number_label="Prefijo/Consecutivo",
           number_forms=("split",), nit_forms=("dots-hyphen",), date_label="Fecha de emisión", date_forms=("iso",),
           meta="grid", totals=("Total bruto", "IVA", "Total neto"), cufe="inline"),
    Family("facturar-a", "a template with 'Facturar a' and totals before the lines", header="letterhead",
           parties="stacked", labels=("", "Facturar a"), number_label="Factura N°", number_forms=("joined", "space"),
           nit_forms=("plain-hyphen", "space"), date_label="Fecha de la factura", date_forms=("month-first",),
           time_label="Hora de emisión", time_forms=("ampm",), money_forms=("cop",),
           totals=("Base", "Valor IVA", "Total a pagar"), totals_at="left", cufe="below",
           person_buyers=True),
    Family("dark-side", "two dark boxes side by side, amounts without symbol", header="banner", parties="side",
           labels=("Datos del vendedor", "Datos del comprador"), number_label="Número de factura",
           number_forms=("hyphen",), nit_forms=("dots-spaced", "dots-hyphen"), date_label="Fecha expedición",
           date_forms=("long",), inverse=True, money_forms=("co-bare",), totals=("Subtotal", "Impuestos",
           "Total"), cufe="beside-qr"),
    Family("courier-letter", "a dot-matrix style statement", page=LETTER, font=("Courier", "Courier-Bold"),
           header="compact", parties="letter", labels=("", "Señor(es)"), number_label="FACTURA DE VENTA No.",
           number_forms=("space",), nit_forms=("plain-hyphen",), date_label="Fecha", date_forms=("dmy-slash",),
           time_forms=("24",), meta="inline", money_forms=("co",), totals=("Valor mercancía", "IVA",
           "Total factura"), totals_at="right", cufe="one-line"),
    Family("helvetica-table", "parties and totals as ruled tables", font=("Helvetica", "Helvetica-Bold"),
           header="centered", parties="table", labels=("Emisor", "Adquiriente"), number_label="Nro. Factura",
           number_forms=("joined",), nit_label="Identificación", nit_forms=("column",), date_label="Fecha",
           date_forms=("dmy-slash", "iso"), time_forms=("24",), meta="grid", money_forms=("co",),
           totals=("Subtotal", "IVA", "Total"), totals_at="grid", cufe="inline"),
    Family("letter-cells", "a letter-size sheet with a cell per datum", page=LETTER, header="letterhead",
           parties="cells", labels=("Emisor", "Cliente"), number_label="Factura electrónica N°",
           number_forms=("space", "hyphen"), nit_forms=("dots-hyphen",), date_label="Generada el",
           date_forms=("dmy-dash",), time_label="a las", time_forms=("24",), meta="inline",
           money_forms=("co",), totals=("Valor antes de IVA", "IVA", "Valor total a pagar"), cufe="below"),
)  # fmt: skip
DEVELOPMENT = tuple(f.name for f in FAMILIES[:10])
HELD_OUT = tuple(f.name for f in FAMILIES[10:])
BY_NAME = {f.name: f for f in FAMILIES}


def family_invoices(family: Family, count: int, seed: int = 0, qr: bool = False) -> list[FamilyInvoice]:
    """`count` invoices of a family, the same for the same seed on any day."""
    rng = random.Random(f"{family.name}/{seed}")  # noqa: S311 - test data, not secrets
    found = []
    for _ in range(count):
        whole = "co-whole" in family.money_forms
        lines = tuple(
            SampleLine(name, Decimal(rng.randint(1, 60)), unit, Decimal(price + (0 if whole else rng.randint(0, 99))))
            for name, unit, price in rng.sample(PRODUCTS, rng.randint(1, 5))
        )
        vat_rate = Decimal(0) if whole else rng.choice((Decimal(0), Decimal(5), Decimal(19)))
        seller = _party(rng)
        buyer = _party(rng, "CC" if family.person_buyers and rng.random() < 0.3 else "NIT")
        while buyer.number == seller.number or buyer.name == seller.name:
            buyer = _party(rng, buyer.kind)
        provider = _party(rng)
        provider = Party(rng.choice(PROVIDERS), provider.number, "NIT", provider.address, provider.city,
                         provider.phone, "soporte@proveedor.com.co")  # fmt: skip
        test_environment = rng.random() < 0.25
        day = dt.date(2026, 1, 5) + dt.timedelta(days=rng.randint(0, 330))
        resolution_date = day - dt.timedelta(days=rng.randint(30, 400))
        decoys = Decoys(
            provider,
            resolution=str(18764000000000 + rng.randint(0, 99_999_999)),
            resolution_date=resolution_date,
            order=f"{rng.choice(('OC', 'PO', 'OC-', ''))}{rng.randint(4500000, 4599999)}",
            bank=rng.choice(BANKS),
            account=f"{rng.randint(100, 999)}-{rng.randint(100000, 999999)}-{rng.randint(10, 99)}",
            items_count=sum(int(line.quantity) for line in lines),
        )
        found.append(
            FamilyInvoice(
                family=family.name,
                prefix=rng.choice(PREFIXES),
                consecutive=rng.randint(1, 99_999_999) if rng.random() < 0.7 else rng.randint(1, 9_999),
                issue_date=day,
                # A family that prints hours and minutes only issues on the minute: the page says it all.
                issue_time=f"{rng.randint(6, 20):02d}:{rng.randint(0, 59):02d}:"
                f"{0 if '24-short' in family.time_forms else rng.randint(0, 59):02d}",
                due_date=day + dt.timedelta(days=rng.choice((8, 15, 30, 60))),
                seller=seller,
                buyer=buyer,
                lines=lines,
                vat_rate=vat_rate,
                environment=2 if test_environment else 1,
                technical_key=TEST_KEY if test_environment else rng.randbytes(20).hex(),
                with_qr=qr,
                decoys=decoys,
            )
        )
    return found


# ---------------------------------------------------------------- drawing


@dataclass
class Sheet:
    """A page drawn top-down in millimetres."""

    canvas: Canvas
    family: Family
    rng: random.Random
    y: float = 0.0  # mm from the top
    margin: float = 14.0
    size: tuple[float, float] = field(default=(0.0, 0.0))

    @property
    def width(self) -> float:
        return self.size[0] / mm

    @property
    def height(self) -> float:
        return self.size[1] / mm

    def text(self, x: float, text: str, size: float = 9, bold: bool = False, y: float | None = None,
             align: str = "left", white: bool = False) -> None:  # fmt: skip
        font = self.family.font[1 if bold else 0]
        self.canvas.setFont(font, size)
        self.canvas.setFillColor(colors.white if white else colors.black)
        at_y = self.size[1] - (self.y if y is None else y) * mm
        if align == "right":
            self.canvas.drawRightString(x * mm, at_y, text)
        elif align == "center":
            self.canvas.drawCentredString(x * mm, at_y, text)
        else:
            self.canvas.drawString(x * mm, at_y, text)
        self.canvas.setFillColor(colors.black)

    def band(self, x: float, width: float, height: float, dark: bool) -> None:
        """A filled band behind the next row (dark for inverse video)."""
        self.canvas.setFillColor(colors.HexColor("#1F2A36" if dark else "#E6E6E6"))
        self.canvas.rect(x * mm, self.size[1] - (self.y + 1.8) * mm, width * mm, height * mm, stroke=0, fill=1)
        self.canvas.setFillColor(colors.black)

    def box(self, x: float, top: float, width: float, height: float) -> None:
        self.canvas.setLineWidth(0.6)
        self.canvas.rect(x * mm, self.size[1] - (top + height) * mm, width * mm, height * mm, stroke=1, fill=0)

    def cells(self, items: Sequence[tuple[str, str]], centred: bool = False) -> None:
        """A row of boxed cells across the page, each a small label over its value."""
        width = (self.width - 2 * self.margin) / len(items)
        top = self.y - 3.5
        for n, (label, value) in enumerate(items):
            x = self.margin + n * width
            at, align = (x + width / 2, "center") if centred else (x + 1.5, "left")
            self.box(x, top, width, 10)
            self.text(at, label, 7 if centred else 6.5, bold=True, y=top + 3.5, align=align)
            self.text(at, value, 8.5 if centred else 8, bold=centred and n == len(items) - 1, y=top + 8.2, align=align)

    def down(self, step: float) -> None:
        self.y += step


@dataclass(frozen=True)
class Printed:
    """One invoice's choices of notation."""

    number: str
    seller_nit: str
    buyer_nit: str
    date: str
    time: str
    money: Callable[[Decimal], str]


def _choices(invoice: FamilyInvoice, family: Family, rng: random.Random) -> Printed:
    nit_form = rng.choice(family.nit_forms)
    number_form = rng.choice(family.number_forms)
    money_form = rng.choice(family.money_forms)
    return Printed(
        number=number_text(invoice, number_form) if number_form != "split" else "",
        seller_nit=nit_text(invoice.seller, nit_form),
        buyer_nit=nit_text(invoice.buyer, nit_form),
        date=date_text(invoice.issue_date, rng.choice(family.date_forms)),
        time=time_text(invoice.issue_time, rng.choice(family.time_forms)),
        money=lambda amount: money(amount, money_form),
    )


def _id_label(family: Family, party: Party) -> str:
    return "C.C." if party.kind == "CC" and family.nit_label == "NIT" else family.nit_label


def _dv_cell(family: Family, party: Party) -> str:
    return f"DV: {party.dv}" if "column" in family.nit_forms and party.dv else ""


def _header(s: Sheet, inv: FamilyInvoice, p: Printed) -> None:
    f, seller, right = s.family, inv.seller, s.width - s.margin
    number_line = f"{f.number_label} {p.number}" if p.number else ""
    if f.header in ("letterhead", "grid"):
        s.text(s.margin, seller.name, 13, bold=True)
        s.down(5)
        s.text(s.margin, f"{f.nit_label} {p.seller_nit}  {_dv_cell(f, seller)}".rstrip(), 9)
        s.down(4.5)
        s.text(s.margin, f"{seller.address} · {seller.city}", 8)
        s.down(4)
        s.text(s.margin, f"Tel. {seller.phone} · {seller.email}", 8)
        top = s.y - 17.5
        s.box(right - 72, top, 72, 17)
        s.text(right - 36, f.title, 9, bold=True, y=top + 5, align="center")
        if number_line:
            s.text(right - 36, number_line, 10, bold=True, y=top + 11, align="center")
        else:
            s.text(right - 70, f"Prefijo: {inv.prefix}", 9, y=top + 11)
            s.text(right - 34, f"Consecutivo: {inv.consecutive}", 9, y=top + 11)
        s.down(10)
    elif f.header == "centered":
        middle = s.width / 2
        s.text(middle, seller.name.upper(), 13, bold=True, align="center")
        s.down(5)
        s.text(middle, f"{f.nit_label} {p.seller_nit}  {_dv_cell(f, seller)}".rstrip(), 9, align="center")
        s.down(4.5)
        s.text(middle, f"{seller.address}, {seller.city} — Teléfono {seller.phone}", 8, align="center")
        s.down(8)
        s.text(middle, f"{f.title}  {number_line}", 11, bold=True, align="center")
        s.down(9)
    elif f.header == "banner":
        s.band(s.margin - 1, s.width - 2 * s.margin + 2, 7.5, dark=True)
        s.text(s.margin + 1, f.title, 11, bold=True, white=True)
        s.text(right - 1, number_line, 11, bold=True, white=True, align="right")
        s.down(10)
        s.text(s.margin, seller.name, 11, bold=True)
        s.down(4.5)
        s.text(s.margin, f"{seller.address} · {seller.city} · {seller.phone}", 8)
        s.down(8)
    elif f.header == "compact":
        s.text(s.margin, f"{f.title} {number_line}".strip(), 11, bold=True)
        s.down(6)
        s.text(s.margin, f"{seller.name} — {f.nit_label} {p.seller_nit}", 9)
        s.down(4.5)
        s.text(s.margin, f"{seller.address} {seller.city} Tel: {seller.phone}", 8)
        s.down(8)
    else:  # roll: everything centred on a narrow strip
        middle = s.width / 2
        for line, size, bold in (
            (seller.name, 9, True), (f"{f.nit_label} {p.seller_nit}", 8, False), (seller.address, 7, False),
            (f"Tel {seller.phone}", 7, False), (f.title, 8, True), (number_line, 9, True),
        ):  # fmt: skip
            s.text(middle, line, size, bold=bold, align="center")
            s.down(4)
        s.down(2)


def _meta(s: Sheet, inv: FamilyInvoice, p: Printed) -> None:
    f = s.family
    due = date_text(inv.due_date, f.date_forms[0])
    items = [
        (f.date_label, p.date), (f.time_label, p.time), ("Fecha de vencimiento", due),
        ("Orden de compra", inv.decoys.order), ("Forma de pago", s.rng.choice(("Crédito", "Contado"))),
    ]  # fmt: skip
    s.rng.shuffle(items[2:])
    if f.meta == "grid":
        s.cells(items)
        s.down(13)
    elif f.meta == "inline":
        s.text(s.margin, f"{f.date_label}: {p.date} {f.time_label} {p.time}", 8.5 if f.header != "roll" else 7.5)
        s.down(4.5)
        s.text(s.margin, f"Vence: {due}  O.C. {inv.decoys.order}", 7.5)
        s.down(7)
    else:
        for label, value in items[:4]:
            s.text(s.margin, f"{label}:", 8.5, bold=True)
            s.text(s.margin + 42, value, 8.5)
            s.down(4.3)
        s.down(4)


def _party_lines(s: Sheet, party: Party, nit: str) -> list[tuple[str, str]]:
    f = s.family
    rows = [("Nombre" if party.kind == "CC" else "Razón social", party.name), (_id_label(f, party), nit)]
    if dv := _dv_cell(f, party):
        rows.append(("DV", dv.split()[-1]))
    rows += [("Dirección", f"{party.address}, {party.city}"), ("Teléfono", party.phone), ("Correo", party.email)]
    return rows


def _parties(s: Sheet, inv: FamilyInvoice, p: Printed) -> None:
    f = s.family
    seller_label, buyer_label = f.labels
    blocks = [(buyer_label, inv.buyer, p.buyer_nit)]
    if seller_label and f.parties in ("side", "cells", "table", "stacked"):
        blocks.insert(0, (seller_label, inv.seller, p.seller_nit))
    if f.parties in ("side", "cells"):
        width = (s.width - 2 * s.margin - 4) / len(blocks)
        top = s.y - 4
        for n, (label, party, nit) in enumerate(blocks):
            x = s.margin + n * (width + 4)
            s.y = top + 4
            if f.inverse:
                s.band(x, width, 6, dark=True)
                s.text(x + 2, label.upper(), 8.5, bold=True, white=True)
            else:
                s.text(x + 2, label, 9, bold=True)
            s.down(5.5)
            for key, value in _party_lines(s, party, nit):
                if f.parties == "cells":
                    s.text(x + 2, key, 6.5, bold=True)
                    s.down(3.2)
                    s.text(x + 2, value, 8.5)
                    s.down(4.2)
                else:
                    s.text(x + 2, f"{key}: {value}", 8.5)
                    s.down(4.3)
            s.box(x, top, width, s.y - top)
        s.down(6)
    elif f.parties == "table":
        for label, party, nit in blocks:
            s.band(s.margin, s.width - 2 * s.margin, 6, dark=f.inverse)
            s.text(s.margin + 2, label, 9, bold=True, white=f.inverse)
            s.down(6)
            for key, value in _party_lines(s, party, nit):
                s.text(s.margin + 2, key, 8.5, bold=True)
                s.text(s.margin + 42, value, 8.5)
                s.down(4.5)
            s.down(3)
    elif f.parties == "letter":
        s.text(s.margin, f"{buyer_label}:", 9, bold=True)
        s.down(4.5)
        s.text(s.margin, inv.buyer.name.upper(), 9)
        s.down(4.5)
        s.text(s.margin, f"{_id_label(f, inv.buyer)}: {p.buyer_nit}", 9)
        s.down(4.5)
        s.text(s.margin, f"{inv.buyer.address} — {inv.buyer.city}", 8.5)
        s.down(4.5)
        s.text(s.margin, f"Tel. {inv.buyer.phone}", 8.5)
        s.down(7)
    else:  # stacked
        for label, party, nit in blocks:
            if label:
                s.text(s.margin, f"{label}:", 9, bold=True)
                if f.header == "roll":
                    s.down(4)
                s.text(s.margin + (36 if f.header != "roll" else 0), party.name, 9 if f.header != "roll" else 7.5)
                s.down(4.5)
            s.text(s.margin, f"{_id_label(f, party)}: {nit} {_dv_cell(f, party)}".rstrip(), 8.5)
            s.down(4.3)
            s.text(s.margin, f"{party.address}, {party.city} · Tel. {party.phone}", 8)
            s.down(6)


def _lines(s: Sheet, inv: FamilyInvoice, p: Printed) -> None:
    f = s.family
    usable = s.width - 2 * s.margin
    narrow = f.header == "roll"
    columns = [s.margin, s.margin + usable * 0.47, s.margin + usable * 0.78, s.width - s.margin]
    s.band(s.margin, usable, 6, dark=f.inverse)
    for n, title in enumerate(f.table_header):
        s.text(columns[n] + (1 if n == 0 else 0), title, 7 if narrow else 8, bold=True, white=f.inverse,
               align="left" if n < 2 else "right")  # fmt: skip
    s.down(6)
    for line in inv.lines:
        if narrow:  # a roll prints the description, then quantity x price and the line's total
            s.text(columns[0] + 1, line.description, 7)
            s.down(3.5)
            s.text(columns[0] + 1, f"{line.quantity} {line.unit} x {p.money(line.price)}", 7)
            s.text(columns[3], p.money(line.total), 7, align="right")
            s.down(4.5)
            continue
        s.text(columns[0] + 1, line.description, 8.5)
        s.text(columns[1], f"{line.quantity} {line.unit}", 8.5)
        s.text(columns[2], p.money(line.price), 8.5, align="right")
        s.text(columns[3], p.money(line.total), 8.5, align="right")
        s.down(5)
    s.text(s.margin + 1, f"Total ítems: {len(inv.lines)}   Unidades: {inv.decoys.items_count}", 7.5)
    s.down(7)


def _totals(s: Sheet, inv: FamilyInvoice, p: Printed) -> None:
    f = s.family
    labels = f.totals
    vat_label = labels[1] if "%" not in labels[1] else f"IVA {inv.vat_rate}%"
    rows = [(labels[0], inv.subtotal), ("Descuentos", Decimal(0)), (vat_label, inv.vat), (labels[2], inv.total)]
    if f.totals_at == "grid":
        s.cells([(label, p.money(amount)) for label, amount in rows], centred=True)
        s.down(14)
        return
    right = s.width - s.margin
    label_x = right - 70 if f.totals_at == "right" else s.margin
    value_x = right if f.totals_at == "right" else s.margin + min(70.0, s.width - 2 * s.margin)
    for label, amount in rows:
        last = label == labels[2]
        if last and f.inverse:
            s.band(label_x - 1, value_x - label_x + 2, 6, dark=True)
        s.text(label_x, f"{label}:" if f.header != "roll" else label, 9, bold=last, white=last and f.inverse)
        s.text(value_x, p.money(amount), 9, bold=last, white=last and f.inverse, align="right")
        s.down(5)
    s.down(4)


def _cufe_and_qr(s: Sheet, inv: FamilyInvoice) -> None:
    f, cufe = s.family, inv.cufe
    narrow = f.header == "roll"
    qr_size = 30.0 if not narrow else 34.0
    if f.cufe == "beside-qr":
        top = s.y
        x = s.margin + qr_size + 4
        s.text(x, f.cufe_label, 7, bold=True)
        for n in range(3):
            s.down(3.4)
            s.text(x, cufe[n * 32 : (n + 1) * 32], 7)
        s.y = top
        if inv.with_qr:
            _qr(s, inv, s.margin, top - 2, qr_size)
        s.down(qr_size + 2)
        return
    if f.cufe == "inline":
        s.text(s.margin, f"{f.cufe_label} {cufe[:64]}", 7.5)
        s.down(3.6)
        s.text(s.margin, cufe[64:], 7.5)
    elif f.cufe == "one-line":
        s.text(s.margin, f.cufe_label, 7, bold=True)
        s.down(3.5)
        s.text(s.margin, cufe, 6.5 if s.width > 150 else 5)
    else:
        per_line = 24 if narrow else 48
        s.text(s.margin, f.cufe_label, 8, bold=True)
        for start in range(0, 96, per_line):
            s.down(3.8)
            s.text(s.margin, cufe[start : start + per_line], 7.5)
    s.down(4)
    if inv.with_qr:
        x = (s.width - qr_size) / 2 if narrow else s.width - s.margin - qr_size
        _qr(s, inv, x, s.y, qr_size)
        s.down(qr_size + 2 if narrow else 4)


def _qr(s: Sheet, inv: FamilyInvoice, x: float, top: float, size: float) -> None:
    code = QrCode(inv.qr_text(), size * mm)
    code.wrapOn(s.canvas, size * mm, size * mm)
    code.drawOn(s.canvas, x * mm, s.size[1] - (top + size) * mm)


def _footer(s: Sheet, inv: FamilyInvoice) -> None:
    d = inv.decoys
    small = 6.5 if s.family.header != "roll" else 5.5
    rows = [
        f"Resolución DIAN de facturación No. {d.resolution} del {d.resolution_date:%Y-%m-%d}, prefijo {inv.prefix}, "
        f"del 1 al 100000000, vigencia 24 meses",
        f"Consignar en {d.bank} cuenta corriente No. {d.account} a nombre de {inv.seller.name}",
        f"Proveedor tecnológico: {d.provider.name} NIT {nit_text(d.provider, 'dots-hyphen')} · Tel. {d.provider.phone}",
        "Representación gráfica de la factura electrónica de venta",
    ]
    if s.family.header == "roll":
        rows = [chunk for row in rows for chunk in (row[:52], row[52:104], row[104:]) if chunk]
    s.y = max(s.y + 4, s.height - 6 - 3.2 * len(rows))
    for row in rows:
        s.text(s.margin, row, small)
        s.down(3.2)


def render(invoice: FamilyInvoice) -> bytes:
    """The invoice as its family prints it: a vector PDF with a text layer."""
    register_fonts()
    family = BY_NAME[invoice.family]
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=family.page)
    rng = random.Random(f"{invoice.number}/{invoice.family}")  # noqa: S311 - layout jitter, not secrets
    sheet = Sheet(canvas, family, rng, y=14.0, margin=14.0 if family.header != "roll" else 4.0, size=family.page)
    printed = _choices(invoice, family, rng)
    _header(sheet, invoice, printed)
    if family.meta != "inline" or family.header == "roll":
        _meta(sheet, invoice, printed)
        _parties(sheet, invoice, printed)
    else:
        _parties(sheet, invoice, printed)
        _meta(sheet, invoice, printed)
    if family.name == "facturar-a":  # this software prints the totals above the items
        _totals(sheet, invoice, printed)
        _lines(sheet, invoice, printed)
    else:
        _lines(sheet, invoice, printed)
        _totals(sheet, invoice, printed)
    _cufe_and_qr(sheet, invoice)
    _footer(sheet, invoice)
    canvas.save()
    return buffer.getvalue()


def invoices_of(names: Sequence[str], per_family: int, seed: int = 0, qr: bool = False) -> Iterator[FamilyInvoice]:
    for name in names:
        yield from family_invoices(BY_NAME[name], per_family, seed, qr)


# The fields a registration and its certificate stand on (accuracy is reported for them apart).
KEY_FIELDS = ("number", "issue_date", "seller_nit", "buyer_id", "total", "cufe")


@dataclass(frozen=True)
class Grade:
    family: str
    field: str
    right: bool
    confidence: float  # 0 when the field was not found


def graded(invoice: FamilyInvoice, reading: Reading) -> Iterator[Grade]:
    """Every field a reader should find on the invoice, right or not."""
    for name, expected in invoice.expected().items():
        found = reading.fields.get(name)
        right = found is not None and found.value == expected
        yield Grade(invoice.family, name, right, found.confidence if found else 0.0)


def accuracy(grades: Iterable[Grade]) -> tuple[float, float]:
    """(key fields right, all fields right), as fractions."""
    grades = list(grades)
    key = [g.right for g in grades if g.field in KEY_FIELDS]
    return sum(key) / max(len(key), 1), sum(g.right for g in grades) / max(len(grades), 1)


def write(out: Path, names: Sequence[str], per_family: int = 3) -> list[dict[str, object]]:
    out.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, object]] = []
    for n, invoice in enumerate(invoices_of(names, per_family)):
        name = f"{n:03d}-{invoice.family}.pdf"
        (out / name).write_bytes(render(invoice))
        manifest.append({"file": name, "family": invoice.family, "expected": invoice.expected(),
                         "decoys": invoice.decoys.values()})  # fmt: skip
    (out / "expected.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


if __name__ == "__main__":
    arguments = sys.argv[1:]
    held_out = "--held-out" in arguments
    count = int(arguments[arguments.index("--per-family") + 1]) if "--per-family" in arguments else 3
    positional = [a for a in arguments if not a.startswith("--") and not a.isdigit()]
    write(Path(positional[0] if positional else "out/ocr-families"), HELD_OUT if held_out else DEVELOPMENT, count)
