"""Invoices between their two shapes: the contract's proto and the domain's document."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from google.type import date_pb2

from bmc.common.v1 import party_pb2
from bmc.invoice.v1 import invoice_pb2
from services.invoice.domain import InvoiceDocument, Line, Party, Tax, Totals
from services.kit.errors import FieldViolation, InvalidArgument


def _decimal(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _party(party: party_pb2.Party) -> Party:
    return Party(int(party.id.type), party.id.number, party.id.check_digit, party.legal_name)


def _tax(tax: invoice_pb2.TaxSubtotal) -> Tax:
    return Tax(
        int(tax.scheme), Decimal(tax.percent or "0"), Decimal(tax.taxable_amount or "0"), Decimal(tax.tax_amount or "0")
    )


def document_from_proto(invoice: invoice_pb2.Invoice) -> InvoiceDocument:
    """The domain document; protovalidate has already checked every format."""
    try:
        issue_date = dt.date(invoice.issue_date.year, invoice.issue_date.month, invoice.issue_date.day)
    except ValueError as exc:
        raise InvalidArgument(
            f"issue_date is not a calendar date: {exc}",
            reason="INVALID_DATE",
            violations=[FieldViolation("invoice.issue_date", str(exc), "INVALID_DATE")],
        ) from exc
    totals = invoice.totals
    return InvoiceDocument(
        number=invoice.number,
        cufe=invoice.cufe.lower(),
        environment=int(invoice.environment) or 1,
        issue_date=issue_date,
        issue_time=invoice.issue_time,
        currency=invoice.currency_code or "COP",
        seller=_party(invoice.seller),
        buyer=_party(invoice.buyer),
        lines=tuple(
            Line(
                line.line_number or i + 1,
                line.product_code,
                line.description,
                Decimal(line.quantity),
                line.unit_code,
                Decimal(line.unit_price),
                Decimal(line.line_extension_amount),
                tuple(_tax(t) for t in line.taxes),
            )
            for i, line in enumerate(invoice.lines)
        ),
        taxes=tuple(_tax(t) for t in invoice.taxes),
        totals=Totals(
            line_extension=Decimal(totals.line_extension_amount),
            payable=Decimal(totals.payable_amount),
            tax_exclusive=_decimal(totals.tax_exclusive_amount),
            tax_inclusive=_decimal(totals.tax_inclusive_amount),
            allowance=_decimal(totals.allowance_total_amount) or Decimal(0),
            charge=_decimal(totals.charge_total_amount) or Decimal(0),
            prepaid=_decimal(totals.prepaid_amount) or Decimal(0),
        ),
    )


def _amount(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _party_proto(party: Party) -> party_pb2.Party:
    return party_pb2.Party(
        id=party_pb2.PartyId(type=party.id_type, number=party.number, check_digit=party.check_digit),  # type: ignore[arg-type]
        legal_name=party.legal_name,
    )


def _tax_proto(tax: Tax) -> invoice_pb2.TaxSubtotal:
    return invoice_pb2.TaxSubtotal(
        scheme=tax.scheme,  # type: ignore[arg-type]
        percent=f"{tax.percent:.2f}",
        taxable_amount=_amount(tax.taxable),
        tax_amount=_amount(tax.amount),
    )


def proto_from_document(doc: InvoiceDocument, source_format: int) -> invoice_pb2.Invoice:
    """The contract's message for a document read from UBL or CSV."""
    totals = doc.totals
    return invoice_pb2.Invoice(
        number=doc.number,
        cufe=doc.cufe,
        environment=doc.environment,  # type: ignore[arg-type]
        issue_date=date_pb2.Date(year=doc.issue_date.year, month=doc.issue_date.month, day=doc.issue_date.day),
        issue_time=doc.issue_time,
        currency_code=doc.currency,
        seller=_party_proto(doc.seller),
        buyer=_party_proto(doc.buyer),
        lines=[
            invoice_pb2.InvoiceLine(
                line_number=line.number,
                product_code=line.product_code,
                description=line.description[:1000],
                quantity=str(line.quantity),
                unit_code=line.unit_code,
                unit_price=str(line.unit_price),
                line_extension_amount=_amount(line.line_extension),
                taxes=[_tax_proto(t) for t in line.taxes],
            )
            for line in doc.lines
        ],
        taxes=[_tax_proto(t) for t in doc.taxes],
        totals=invoice_pb2.MonetaryTotal(
            line_extension_amount=_amount(totals.line_extension),
            tax_exclusive_amount=_amount(totals.tax_exclusive),
            tax_inclusive_amount=_amount(totals.tax_inclusive),
            allowance_total_amount=_amount(totals.allowance) if totals.allowance else "",
            charge_total_amount=_amount(totals.charge) if totals.charge else "",
            prepaid_amount=_amount(totals.prepaid) if totals.prepaid else "",
            payable_amount=_amount(totals.payable),
        ),
        source_format=source_format,  # type: ignore[arg-type]
    )
