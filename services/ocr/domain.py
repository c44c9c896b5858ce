"""Reading a DIAN invoice's fields out of text, free of I/O: the QR payload,
Colombian amounts, labelled fields on a page, line items, and the
cross-checks that raise or lower the confidence in what was read."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from services.dian.cufe import TEST_ENVIRONMENT_KEY, CufeFields
from services.dian.nit import check_digit


class Source(StrEnum):
    QR = "QR"
    TEXT_LAYER = "TEXT_LAYER"
    OCR = "OCR"
    DERIVED = "DERIVED"


# Base confidence of a value by where it was read.
BASE_CONFIDENCE = {Source.QR: 0.99, Source.TEXT_LAYER: 0.95, Source.OCR: 0.75, Source.DERIVED: 0.9}

# QR keys (current form and the older `NroFactura=` form) → field names.
QR_KEYS = {
    "numfac": "number", "nrofactura": "number",
    "fecfac": "issue_date", "fechafactura": "issue_date",
    "horfac": "issue_time",
    "nitfac": "seller_nit", "nitfacturador": "seller_nit",
    "docadq": "buyer_id", "nitadquiriente": "buyer_id",
    "valfac": "subtotal", "valorfactura": "subtotal",
    "valiva": "vat", "valoriva": "vat",
    "valotroim": "other_taxes", "valorotrosimpuestos": "other_taxes",
    "valtolfac": "total", "valortotalfactura": "total",
    "cufe": "cufe",
}  # fmt: skip


Box = tuple[float, float, float, float]  # left, top, width, height, as fractions of the page


def union(boxes: Iterable[Box]) -> Box | None:
    """The smallest box holding all of them."""
    edges = [(b[0], b[1], b[0] + b[2], b[1] + b[3]) for b in boxes if b[2] > 0 or b[3] > 0]
    if not edges:
        return None
    left, top = min(e[0] for e in edges), min(e[1] for e in edges)
    right, bottom = max(e[2] for e in edges), max(e[3] for e in edges)
    return (round(left, 4), round(top, 4), round(right - left, 4), round(bottom - top, 4))


def turned_back(box: Box, turn: int) -> Box:
    """A box found on a page turned `turn` degrees counter-clockwise, on the page as given."""
    left, top, width, height = box
    corners = [(left, top), (left + width, top + height)]
    if turn == 90:
        corners = [(1 - y, x) for x, y in corners]
    elif turn == 180:
        corners = [(1 - x, 1 - y) for x, y in corners]
    elif turn == 270:
        corners = [(y, 1 - x) for x, y in corners]
    (x1, y1), (x2, y2) = corners
    return (min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1))


@dataclass(frozen=True)
class PageText:
    """A page's text and where its characters are: `(start, end, box)` spans
    of the text (words for OCR, characters for a text layer)."""

    text: str
    spans: Sequence[tuple[int, int, Box]] = ()
    aspect: float = 1.0  # the page's width over its height: boxes are fractions of each

    def box(self, start: int, end: int) -> Box | None:
        return union(b for s, e, b in self.spans if s < end and e > start)


@dataclass(frozen=True)
class Field:
    name: str
    value: str
    source: Source
    confidence: float
    raw: str = ""
    page: int = 0
    box: tuple[float, float, float, float] | None = None  # left, top, width, height (fractions of the page)


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    total: Decimal
    source: Source
    confidence: float


@dataclass(frozen=True)
class Warning:
    code: str
    fields: tuple[str, ...]
    message: str


@dataclass
class Reading:
    """Every field read so far, the best per name, and the line items."""

    fields: dict[str, Field] = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)

    def offer(self, candidate: Field) -> None:
        """Keeps the candidate if no better-sourced value is known."""
        current = self.fields.get(candidate.name)
        if current is None or candidate.confidence > current.confidence:
            self.fields[candidate.name] = candidate

    def value(self, name: str) -> str:
        found = self.fields.get(name)
        return found.value if found else ""


# ---------------------------------------------------------------- values


def parse_amount(text: str) -> Decimal | None:
    """`$ 1.190.000,00`, `1,190,000.00`, `1190000`, `COP 1.190.000` → Decimal;
    the last separator followed by exactly two digits is the decimal one."""
    cleaned = re.sub(r"[^\d,.\-]", "", text)
    if not re.search(r"\d", cleaned):
        return None
    last = max(cleaned.rfind(","), cleaned.rfind("."))
    if last >= 0 and len(cleaned) - last - 1 == 2:
        whole, cents = cleaned[:last], cleaned[last + 1 :]
    else:
        whole, cents = cleaned, "00"
    whole = whole.replace(",", "").replace(".", "")
    try:
        return Decimal(f"{whole or '0'}.{cents}")
    except InvalidOperation:
        return None


MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
          "noviembre", "diciembre")  # fmt: skip
_MONTH = r"(ene|feb|mar|abr|may|jun|jul|ago|sep|set|oct|nov|dic)[a-z]*\.?"


def _month(name: str) -> int:
    return [m[:3] for m in MONTHS].index(name.replace("set", "sep")) + 1


def parse_date(text: str) -> dt.date | None:
    """ISO and `yyyy/mm/dd`, `dd/mm/yyyy` (Colombian order: day first),
    `dd-mm-yyyy`, `dd de <mes> de yyyy`, `<Mes> dd de yyyy`, `dd-mes-yyyy`."""
    text = fold(text)
    if m := re.search(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text):
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    elif m := re.search(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})", text):
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    elif m := re.search(r"(\d{1,2})(?: de |[ /.-])" + _MONTH + r"(?: de(?:l)? |[ /.-])(\d{4})", text):
        day, month, year = int(m[1]), _month(m[2]), int(m[3])
    elif m := re.search(_MONTH + r" (\d{1,2})(?: de |, | )(\d{4})", text):
        day, month, year = int(m[2]), _month(m[1]), int(m[3])
    else:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def parse_time(text: str) -> str | None:
    """`10:15`, `10:15:00`, `3:05 p. m.` → `HH:MM:SS-05:00` (DIAN times are Colombian)."""
    m = re.search(r"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([ap])\.?\s*m\b\.?)?", fold(text))
    if not m:
        return None
    hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
    if m[4]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if m[4] == "p" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return f"{hour:02d}:{minute:02d}:{second:02d}-05:00"


def fold(text: str) -> str:
    """Lower case without accents: labels are matched on this form."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def split_nit(text: str) -> tuple[str, str]:
    """`900.508.908-9` → (`900508908`, `9`); a bare number → (number, "")."""
    m = re.search(r"(\d[\d.]{4,17}\d)\s*-\s*(\d)\b", text)
    if m:
        return m[1].replace(".", ""), m[2]
    m = re.search(r"\b(\d[\d.]{2,18}\d)\b", text)
    return (m[1].replace(".", ""), "") if m else ("", "")


# ---------------------------------------------------------------- the QR


def parse_dian_qr(text: str) -> dict[str, str] | None:
    """The fields of a DIAN QR payload, or None when the text is not one."""
    found: dict[str, str] = {}
    for part in re.split(r"[\r\n]+", text.strip()):
        key, sep, value = part.partition(":") if ":" in part.split("=")[0] else part.partition("=")
        if not sep:
            continue
        name = QR_KEYS.get(re.sub(r"[^a-z]", "", key.lower()))
        if name:
            found[name] = value.strip()
    if "cufe" not in found and (m := re.search(r"documentkey=([0-9a-fA-F]{96})", text)):
        found["cufe"] = m[1]
    return found if {"number", "cufe"} <= found.keys() or {"number", "total"} <= found.keys() else None


def qr_fields(payload: Mapping[str, str], page: int, box: Box | None = None) -> list[Field]:
    fields = []
    for name, raw in payload.items():
        value = raw
        if name in ("subtotal", "vat", "other_taxes", "total"):
            amount = parse_amount(raw)
            if amount is None:
                continue
            value = str(amount)
        elif name == "issue_date":
            day = parse_date(raw)
            if day is None:
                continue
            value = day.isoformat()
        elif name == "cufe":
            value = raw.lower()
        fields.append(Field(name, value, Source.QR, BASE_CONFIDENCE[Source.QR], raw, page, box))
    return fields


# ---------------------------------------------------------------- line items

_LINE = re.compile(
    r"^\s*(?:\d{1,3}\s+)?(?P<description>[^\d$\n][^\n$]{2,}?)\s+(?P<quantity>\d+(?:[.,]\d+)?)\s*(?P<unit>[a-z]{1,4})?\s+"
    r"\$?\s*(?P<price>\d[\d.,]*)\s+\$?\s*(?P<total>\d[\d.,]*)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def line_items(text: str, source: Source) -> list[Line]:
    """Rows `description quantity [unit] unit-price total` whose arithmetic
    holds (quantity × price = total to the peso): the check filters out the
    other lines of the page that happen to look like a row."""
    items = []
    for m in _LINE.finditer(text):
        quantity, price, total = parse_amount(m["quantity"]), parse_amount(m["price"]), parse_amount(m["total"])
        if quantity is None or price is None or total is None:
            continue
        if m["quantity"].count(".") == 1 and len(m["quantity"].split(".")[1]) != 2:
            quantity = Decimal(m["quantity"].replace(",", "."))
        if abs(quantity * price - total) > 1:
            continue
        items.append(
            Line(m["description"].strip(), quantity, (m["unit"] or "").upper(), price, total, source,
                 BASE_CONFIDENCE[source])
        )  # fmt: skip
    return items


def offer_page(reading: Reading, found: Sequence[Field]) -> None:
    """Offers a page's fields; a check digit only stands beside the number it
    was printed with (a QR's buyer number keeps none from another NIT)."""
    numbers = {f.name: f.value for f in found}
    for candidate in found:
        if candidate.name.endswith("_dv"):
            party = reading.fields.get(candidate.name.removesuffix("_dv"))
            if party is not None and party.value != numbers.get(party.name):
                continue
        reading.offer(candidate)


# ---------------------------------------------------------------- checks


def cross_check(reading: Reading) -> Reading:
    """Lowers the confidence of values that contradict each other, across
    pages and the QR code too, and warns about them (the reader has already
    raised what its checks confirm)."""
    fields, warnings = dict(reading.fields), list(reading.warnings)

    def adjust(names: Iterable[str], factor: float) -> None:
        for name in names:
            if name in fields:
                fields[name] = replace(fields[name], confidence=max(0.0, min(0.999, fields[name].confidence * factor)))

    for party in ("seller_nit", "buyer_id"):
        number, dv = reading.value(party), reading.value(f"{party}_dv")
        if number and dv and check_digit(number) != int(dv):
            adjust((party, f"{party}_dv"), 0.5)
            warnings.append(
                Warning("NIT_CHECK_DIGIT", (party,), f"{number}-{dv}: the check digit should be {check_digit(number)}")
            )
    amounts = {n: Decimal(reading.value(n)) for n in ("subtotal", "vat", "total", "other_taxes") if reading.value(n)}
    if {"subtotal", "vat", "total"} <= amounts.keys() and (
        amounts["subtotal"] + amounts["vat"] + amounts.get("other_taxes", Decimal(0)) != amounts["total"]
    ):
        adjust(("subtotal", "vat", "total"), 0.7)
        warnings.append(Warning("TOTALS_MISMATCH", ("subtotal", "vat", "total"),
                                f"{amounts['subtotal']} + {amounts['vat']} ≠ {amounts['total']}"))  # fmt: skip
    if reading.lines and "subtotal" in amounts:
        lines_total = sum((line.total for line in reading.lines), Decimal(0))
        if lines_total != amounts["subtotal"]:
            message = f"the lines add up to {lines_total}, the subtotal says {amounts['subtotal']}"
            warnings.append(Warning("LINES_MISMATCH", ("lines", "subtotal"), message))
    return Reading(fields, list(reading.lines), warnings)


def disagreements(qr: Sequence[Field], text: Sequence[Field]) -> list[Warning]:
    """Where the QR and the printed text say different things."""
    printed = {f.name: f for f in text}
    return [
        Warning("QR_TEXT_MISMATCH", (f.name,), f"the QR says {f.value}, the page says {printed[f.name].value}")
        for f in qr
        if f.name in printed and printed[f.name].value != f.value
    ]


def recomputed(fields: Mapping[str, Field], keys: Sequence[str] = (TEST_ENVIRONMENT_KEY,)) -> set[str]:
    """The CUFEs the fields read would have (SHA-384 with each technical key,
    DIAN's test key always among them, in either environment); none when a
    field the hash covers was not read."""
    needed = ("number", "issue_date", "issue_time", "subtotal", "total", "seller_nit", "buyer_id")
    if not all(n in fields for n in needed):
        return set()
    vat = Decimal(fields["vat"].value) if "vat" in fields else Decimal(0)
    return {
        CufeFields(
            fields["number"].value, dt.date.fromisoformat(fields["issue_date"].value), fields["issue_time"].value,
            Decimal(fields["subtotal"].value), vat, Decimal(0), Decimal(0), Decimal(fields["total"].value),
            fields["seller_nit"].value, fields["buyer_id"].value, environment,
        ).cufe(key)
        for environment in (2, 1)
        for key in keys
    }  # fmt: skip


def recomputes(fields: Mapping[str, Field], keys: Sequence[str] = (TEST_ENVIRONMENT_KEY,)) -> bool:
    """Whether the CUFE read is the SHA-384 of the other fields read with
    one of the technical keys."""
    return "cufe" in fields and fields["cufe"].value in recomputed(fields, keys)


# The fields a registration stands on: a wrong one and the certificate
# attests another invoice (or one that does not exist).
KEY_FIELDS = ("number", "cufe", "seller_nit", "buyer_id", "total")


def verified(reading: Reading) -> set[str]:
    """The key fields an independent check confirms: a NIT whose printed
    check digit matches it, a total that equals the subtotal and taxes read
    beside it, and all of them when the CUFE recomputes from the fields read
    (with DIAN's test key; a production CUFE needs its issuer's technical
    key). A check digit the reader derived itself confirms nothing."""
    if recomputes(reading.fields):
        return {name for name in KEY_FIELDS if name in reading.fields}
    confirmed = set()
    for party in ("seller_nit", "buyer_id"):
        number, dv = reading.fields.get(party), reading.fields.get(f"{party}_dv")
        if (
            number
            and dv
            and dv.source != Source.DERIVED
            and dv.value.isdigit()
            and check_digit(number.value) == int(dv.value)
        ):
            confirmed.add(party)
    amounts = {n: reading.value(n) for n in ("subtotal", "vat", "other_taxes", "total")}
    if amounts["subtotal"] and amounts["vat"] and amounts["total"]:
        taxes = Decimal(amounts["vat"]) + Decimal(amounts["other_taxes"] or 0)
        if Decimal(amounts["subtotal"]) + taxes == Decimal(amounts["total"]):
            confirmed.add("total")
    return confirmed


def to_confirm(reading: Reading) -> list[str]:
    """Key fields read by Tesseract (not from the QR code, not from a text
    layer) that no check confirmed: a person must confirm or correct them
    before the draft may be registered."""
    checked = verified(reading)
    return [
        name
        for name in KEY_FIELDS
        if name in reading.fields and reading.fields[name].source == Source.OCR and name not in checked
    ]


def overall(
    reading: Reading, required: Sequence[str] = ("number", "issue_date", "seller_nit", "total", "cufe")
) -> float:
    """The extraction's confidence: the mean over the key fields (0 for a missing one)."""
    return sum(reading.fields[n].confidence if n in reading.fields else 0.0 for n in required) / len(required)
