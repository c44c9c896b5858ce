"""A reading as the contract's messages: the extracted fields, and the draft
invoice in the invoice service's own message, ready for `RegisterInvoice`
once a person has checked it and chosen the catalog products."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from google.type import date_pb2

from bmc.common.v1 import party_pb2, tax_pb2
from bmc.invoice.v1 import invoice_pb2
from bmc.ocr.v1 import ocr_pb2
from services.dian.nit import check_digit
from services.ocr.domain import Reading, Source

SOURCES = {
    Source.QR: ocr_pb2.FIELD_SOURCE_QR,
    Source.TEXT_LAYER: ocr_pb2.FIELD_SOURCE_TEXT_LAYER,
    Source.OCR: ocr_pb2.FIELD_SOURCE_OCR,
    Source.DERIVED: ocr_pb2.FIELD_SOURCE_DERIVED,
}


def fields_to_proto(reading: Reading) -> list[ocr_pb2.ExtractedField]:
    return [
        ocr_pb2.ExtractedField(
            field=f.name,
            value=f.value,
            raw_text=f.raw[:500],
            confidence=round(f.confidence, 3),
            source=SOURCES[f.source],
            box=ocr_pb2.BoundingBox(
                page=f.page, **dict(zip(("left", "top", "width", "height"), f.box or (), strict=False))
            ),
        )
        for f in sorted(reading.fields.values(), key=lambda f: f.name)
    ]


def _party(reading: Reading, prefix: str, name_field: str) -> party_pb2.Party:
    number = reading.value(prefix)
    dv = reading.value(f"{prefix}_dv")
    if number.isdigit() and not dv and len(number) <= 15:
        dv = str(check_digit(number))
    return party_pb2.Party(
        id=party_pb2.PartyId(type=party_pb2.IDENTIFICATION_TYPE_NIT, number=number, check_digit=dv),
        legal_name=reading.value(name_field),
    )


def draft_invoice(reading: Reading) -> invoice_pb2.Invoice:
    """What was read, as an invoice; empty where nothing was read."""
    draft = invoice_pb2.Invoice(
        number=reading.value("number"),
        cufe=reading.value("cufe"),
        issue_time=reading.value("issue_time"),
        currency_code="COP",
        operation_type=invoice_pb2.OPERATION_TYPE_PURCHASE,
        seller=_party(reading, "seller_nit", "seller_name"),
        buyer=_party(reading, "buyer_id", "buyer_name"),
        source_format=invoice_pb2.SOURCE_FORMAT_OCR,
    )
    if issued := reading.value("issue_date"):
        day = dt.date.fromisoformat(issued)
        draft.issue_date.CopyFrom(date_pb2.Date(year=day.year, month=day.month, day=day.day))
    for number, line in enumerate(reading.lines, start=1):
        draft.lines.add(
            line_number=number, description=line.description, quantity=f"{line.quantity.normalize():f}",
            unit_code=line.unit[:3], unit_price=f"{line.unit_price:.2f}", line_extension_amount=f"{line.total:.2f}",
        )  # fmt: skip
    subtotal, vat, total = (reading.value(n) for n in ("subtotal", "vat", "total"))
    if subtotal and vat:
        base, tax = Decimal(subtotal), Decimal(vat)
        percent = (tax / base * 100).quantize(Decimal("0.01")) if base else Decimal(0)
        draft.taxes.add(scheme=tax_pb2.TAX_SCHEME_IVA, percent=f"{percent}", taxable_amount=subtotal, tax_amount=vat)
    draft.totals.CopyFrom(
        invoice_pb2.MonetaryTotal(
            line_extension_amount=subtotal,
            tax_exclusive_amount=subtotal if vat else "",
            tax_inclusive_amount=total,
            payable_amount=total,
        )
    )
    return draft
