"""The rule for registering a draft the OCR service read: every key field
Tesseract read without an independent check, and every key field changed
from what was read, must have been confirmed by a person. A wrong CUFE or
NIT in a registration is worse than a refusal: the certificate would attest
an invoice that does not exist. Pure: the extraction is fetched by the api."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from bmc.invoice.v1 import invoice_pb2

# The key fields, as the extraction names them, and where they are in an invoice.
KEY_FIELDS: dict[str, Callable[[invoice_pb2.Invoice], str]] = {
    "number": lambda invoice: invoice.number,
    "cufe": lambda invoice: invoice.cufe.lower(),
    "seller_nit": lambda invoice: invoice.seller.id.number,
    "buyer_id": lambda invoice: invoice.buyer.id.number,
    "total": lambda invoice: invoice.totals.payable_amount,
}


def _same(field: str, a: str, b: str) -> bool:
    if field == "total":
        try:
            return Decimal(a) == Decimal(b)
        except InvalidOperation:
            return a == b
    return a == b


def unconfirmed(
    submitted: invoice_pb2.Invoice, read: invoice_pb2.Invoice, to_confirm: Sequence[str], confirmed: Sequence[str]
) -> list[str]:
    """The key fields still waiting for a person: those the extraction asks
    to confirm, then those whose value differs from what was read, that the
    review does not name."""
    named = set(confirmed)
    waiting = [f for f in to_confirm if f not in named]
    changed = [
        f
        for f, value in KEY_FIELDS.items()
        if f not in named and f not in waiting and not _same(f, value(submitted), value(read))
    ]
    return waiting + changed
