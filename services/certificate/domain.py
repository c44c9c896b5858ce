"""What a certificate states, free of I/O: the certified facts, the
certificate number, the verification code people type, the legal basis, and
the Colombian way of writing amounts."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

import orjson

ISSUER_NAME = "Bolsa Mercantil de Colombia S.A."
ISSUER_NIT = "860.071.250-9"
# domain.md, "The business": why a registered operation is not subject to withholding.
LEGAL_BASIS = (
    "Los pagos o abonos en cuenta por la adquisición de productos de origen agropecuario, pecuario o pesquero, "
    "sin procesamiento industrial o con transformación primaria, realizados a través de la Bolsa Mercantil de "
    "Colombia y registrados en el sistema que ella administra, no están sometidos a retención en la fuente a "
    "título de impuesto sobre la renta, cualquiera que sea su cuantía (Decreto Único Reglamentario 1625 de 2016, "
    "art. 1.2.4.6.10, sustituido por el Decreto 1555 de 2017; Ley 101 de 1993, art. 56)."
)
# Crockford's base 32: no I, L, O or U, so a code read aloud or retyped survives.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class PartyFacts:
    name: str
    id_type: str  # "NIT", "CC", ...
    number: str
    check_digit: str = ""

    @property
    def display_id(self) -> str:
        return (
            f"{self.id_type} {self.number}-{self.check_digit}" if self.check_digit else f"{self.id_type} {self.number}"
        )


@dataclass(frozen=True)
class LineFacts:
    number: int
    product_code: str
    description: str
    quantity: Decimal
    unit_code: str
    amount: Decimal


@dataclass(frozen=True)
class InvoiceFacts:
    """What an invoice certificate certifies, as registered."""

    invoice: str  # invoices/{id}
    broker: str
    number: str
    cufe: str
    issue_date: dt.date
    registration_number: str
    registration_time: dt.datetime
    seller: PartyFacts
    buyer: PartyFacts
    subtotal: Decimal
    vat: Decimal
    total: Decimal
    lines: Sequence[LineFacts]
    commission: Decimal  # BMC's commission charged, IVA included

    @property
    def summary(self) -> str:
        return f"Factura {self.number}"

    def digest(self) -> str:
        """SHA-256 of the facts in canonical JSON: printed on the certificate
        (a PDF cannot contain the hash of its own bytes; that one is kept by
        the registry and checked by `VerifyCertificate`)."""
        return content_digest(self)


def content_digest(facts: InvoiceFacts | PeriodicFacts) -> str:
    """SHA-256 of a facts dataclass in canonical JSON (sorted keys; dates and decimals as text)."""
    return hashlib.sha256(orjson.dumps(asdict(facts), default=str, option=orjson.OPT_SORT_KEYS)).hexdigest()


def verification_code(entropy: bytes) -> str:
    """A 12-character code (60 bits) in groups of four: `7KQ2-M9XD-4TRA`."""
    if len(entropy) < 8:
        raise ValueError("a verification code needs at least 8 bytes of entropy")
    value = int.from_bytes(entropy[:8], "big") >> 4
    chars = "".join(_ALPHABET[(value >> (5 * i)) & 31] for i in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def normalise_code(code: str) -> str:
    """The stored form of a typed code: upper case, dashes back in place,
    letters that look like digits read as digits."""
    plain = code.replace("-", "").replace(" ", "").upper().translate(_READ_AS)
    return f"{plain[:4]}-{plain[4:8]}-{plain[8:]}"


def certificate_number(year: int, sequence: int) -> str:
    return f"BMC-CR-{year}-{sequence:08d}"


@dataclass(frozen=True)
class OperationFacts:
    """One registered operation of a periodic certificate."""

    invoice_number: str
    issue_date: dt.date
    seller: PartyFacts
    registration_number: str
    registration_date: dt.date
    total: Decimal
    commission: Decimal


MONTHS = (
    "enero", "febrero", "marzo", "abril", "mayo", "junio",
    "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
)  # fmt: skip


@dataclass(frozen=True)
class PeriodicFacts:
    """What a periodic certificate certifies: every operation of a buyer
    registered through a broker in a month (or a whole year when `month` is 0)."""

    broker: str  # empty: all brokers
    buyer: PartyFacts
    year: int
    month: int
    operations: Sequence[OperationFacts]

    @property
    def summary(self) -> str:
        return f"Operaciones de {self.buyer.name} ({self.buyer.display_id}), {self.label}"

    @property
    def label(self) -> str:
        return f"{MONTHS[self.month - 1]} de {self.year}" if self.month else f"el año {self.year}"

    @property
    def total(self) -> Decimal:
        return sum((o.total for o in self.operations), Decimal(0))

    @property
    def commission(self) -> Decimal:
        return sum((o.commission for o in self.operations), Decimal(0))

    def digest(self) -> str:
        return content_digest(self)


def period_bounds(year: int, month: int) -> tuple[dt.date, dt.date]:
    """First day of the period, and first day after it."""
    if not month:
        return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    return dt.date(year, month, 1), dt.date(year + month // 12, month % 12 + 1, 1)


def periodic_subject(broker: str, buyer_id: str, year: int, month: int) -> str:
    return f"periodic:{broker or 'all'}:{buyer_id}:{year}-{month:02d}"
