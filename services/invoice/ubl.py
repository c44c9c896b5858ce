"""DIAN UBL 2.1 invoices, and the AttachedDocument that wraps them, read safely.

Hostile XML is refused before it is interpreted: documents over a size
limit, any DTD, any entity declaration or external reference (defusedxml),
and nesting deeper than real invoices ever go. Problems are reported as
`UblError` with the element path and a stable reason.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from services.invoice.domain import InvoiceDocument, Line, Party, Tax, Totals

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
NS = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "att": "urn:oasis:names:specification:ubl:schema:xsd:AttachedDocument-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
INVOICE = f"{{{NS['inv']}}}Invoice"
ATTACHED = f"{{{NS['att']}}}AttachedDocument"
ID_TYPES = {
    "13": 13,
    "22": 22,
    "31": 31,
    "41": 41,
    "42": 42,
    "47": 47,
    "48": 48,
    "50": 50,
    "11": 11,
    "12": 12,
    "21": 21,
}
TAX_CODES = {"01": 1, "02": 2, "03": 3, "04": 4, "05": 5, "06": 6, "07": 7, "22": 22}


class UblError(ValueError):
    """The document cannot be read as a DIAN invoice."""

    def __init__(self, path: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.path, self.reason, self.message = path, reason, message

    def __reduce__(self) -> tuple[type[UblError], tuple[str, str, str]]:
        # Documents are read in worker processes: the error crosses back pickled.
        return type(self), (self.path, self.reason, self.message)


@dataclass(frozen=True)
class ParsedInvoice:
    document: InvoiceDocument
    operation_note: str = ""


def safe_root(data: bytes) -> Element:
    """The root element of `data`, or UblError for hostile or malformed XML."""
    if len(data) > MAX_BYTES:
        raise UblError("", "TOO_LARGE", f"XML documents are limited to {MAX_BYTES // 2**20} MiB")
    depth = 0
    root: Element | None = None
    try:
        events: Iterator[tuple[str, Element]] = iterparse(
            io.BytesIO(data), events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        for event, element in events:
            if event == "start":
                depth += 1
                root = element if root is None else root
                if depth > MAX_DEPTH:
                    raise UblError("", "TOO_DEEP", f"XML nesting deeper than {MAX_DEPTH} levels")
            else:
                depth -= 1
    except DefusedXmlException as exc:
        reason = "FORBIDDEN_DTD" if "DTD" in type(exc).__name__ else "FORBIDDEN_ENTITY"
        raise UblError("", reason, f"refused: {type(exc).__name__} (DTDs and entities are not allowed)") from exc
    except ParseError as exc:
        raise UblError("", "MALFORMED_XML", f"not well-formed XML: {exc}") from exc
    if root is None:
        raise UblError("", "MALFORMED_XML", "empty document")
    return root


def _find(element: Element, path: str) -> Element | None:
    return element.find(path, NS)


def _text(element: Element, path: str, required: bool = True) -> str:
    found = _find(element, path)
    text = (found.text or "").strip() if found is not None else ""
    if required and not text:
        raise UblError(path, "MISSING_ELEMENT", f"{path} is missing or empty")
    return text


def _amount(element: Element, path: str, required: bool = True) -> Decimal | None:
    text = _text(element, path, required)
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise UblError(path, "BAD_AMOUNT", f"{path} is not a number: {text!r}") from exc


def _need(value: Decimal | None) -> Decimal:
    assert value is not None
    return value


def _party(element: Element, role: str) -> Party:
    base = f"cac:{role}/cac:Party"
    company = _find(element, f"{base}/cac:PartyTaxScheme/cbc:CompanyID")
    if company is None or not (company.text or "").strip():
        raise UblError(f"{base}/cac:PartyTaxScheme/cbc:CompanyID", "MISSING_ELEMENT", f"the {role} has no CompanyID")
    id_type = ID_TYPES.get(company.get("schemeName", "31"), 0)
    name = _text(element, f"{base}/cac:PartyTaxScheme/cbc:RegistrationName", required=False) or _text(
        element, f"{base}/cac:PartyLegalEntity/cbc:RegistrationName", required=False
    )
    return Party(
        id_type=id_type,
        number=(company.text or "").strip(),
        check_digit=company.get("schemeID", "") if id_type == 31 else "",
        legal_name=name,
    )


def _taxes(element: Element, path: str) -> tuple[Tax, ...]:
    taxes = []
    for subtotal in element.findall(f"{path}/cac:TaxSubtotal", NS):
        code = _text(subtotal, "cac:TaxCategory/cac:TaxScheme/cbc:ID")
        taxes.append(
            Tax(
                scheme=TAX_CODES.get(code, 99),
                percent=_amount(subtotal, "cac:TaxCategory/cbc:Percent", required=False) or Decimal(0),
                # Per-unit taxes (bags, 22) carry no taxable base.
                taxable=_amount(subtotal, "cbc:TaxableAmount", required=False) or Decimal(0),
                amount=_need(_amount(subtotal, "cbc:TaxAmount")),
            )
        )
    return tuple(taxes)


def _line(element: Element, index: int) -> Line:
    quantity_element = _find(element, "cbc:InvoicedQuantity")
    quantity = _amount(element, "cbc:InvoicedQuantity")
    price = _need(_amount(element, "cac:Price/cbc:PriceAmount"))
    base = _amount(element, "cac:Price/cbc:BaseQuantity", required=False)
    if base is not None and base not in (0, 1):
        price = price / base  # DIAN quotes the price per BaseQuantity units
    code = _text(element, "cac:Item/cac:StandardItemIdentification/cbc:ID", required=False) or _text(
        element, "cac:Item/cac:SellersItemIdentification/cbc:ID", required=False
    )
    return Line(
        number=int(_text(element, "cbc:ID", required=False) or index + 1),
        product_code=code,
        description=_text(element, "cac:Item/cbc:Description", required=False),
        quantity=_need(quantity),
        unit_code=(quantity_element.get("unitCode", "") if quantity_element is not None else "")[:3],
        unit_price=price,
        line_extension=_need(_amount(element, "cbc:LineExtensionAmount")),
        taxes=_taxes(element, "cac:TaxTotal"),
    )


def parse_invoice_element(root: Element) -> InvoiceDocument:
    if root.tag != INVOICE:
        kind = root.tag.rsplit("}", 1)[-1]
        raise UblError(
            kind, "UNSUPPORTED_DOCUMENT", f"a {kind} is not an invoice; only Invoice documents are registered"
        )
    number, cufe = _text(root, "cbc:ID"), _text(root, "cbc:UUID")
    uuid = _find(root, "cbc:UUID")
    environment_text = _text(root, "cbc:ProfileExecutionID", required=False) or (
        uuid.get("schemeID", "") if uuid is not None else ""
    )
    issue_date_text = _text(root, "cbc:IssueDate")
    try:
        issue_date = dt.date.fromisoformat(issue_date_text)
    except ValueError as exc:
        raise UblError("cbc:IssueDate", "BAD_DATE", "IssueDate must be YYYY-MM-DD") from exc
    totals = "cac:LegalMonetaryTotal"
    return InvoiceDocument(
        number=number,
        cufe=cufe,
        environment=int(environment_text) if environment_text in ("1", "2") else 0,
        issue_date=issue_date,
        issue_time=_text(root, "cbc:IssueTime", required=False),
        currency=_text(root, "cbc:DocumentCurrencyCode", required=False) or "COP",
        seller=_party(root, "AccountingSupplierParty"),
        buyer=_party(root, "AccountingCustomerParty"),
        lines=tuple(_line(line, i) for i, line in enumerate(root.findall("cac:InvoiceLine", NS))),
        taxes=_taxes(root, "cac:TaxTotal") + _taxes(root, "cac:WithholdingTaxTotal"),
        totals=Totals(
            line_extension=_need(_amount(root, f"{totals}/cbc:LineExtensionAmount")),
            tax_exclusive=_amount(root, f"{totals}/cbc:TaxExclusiveAmount", required=False),
            tax_inclusive=_amount(root, f"{totals}/cbc:TaxInclusiveAmount", required=False),
            allowance=_amount(root, f"{totals}/cbc:AllowanceTotalAmount", required=False) or Decimal(0),
            charge=_amount(root, f"{totals}/cbc:ChargeTotalAmount", required=False) or Decimal(0),
            prepaid=_amount(root, f"{totals}/cbc:PrepaidAmount", required=False) or Decimal(0),
            payable=_need(_amount(root, f"{totals}/cbc:PayableAmount")),
        ),
    )


def parse_document(data: bytes) -> InvoiceDocument:
    """An Invoice, or the Invoice inside an AttachedDocument."""
    root = safe_root(data)
    if root.tag == ATTACHED:
        inner = _text(root, "cac:Attachment/cac:ExternalReference/cbc:Description")
        return parse_invoice_element(safe_root(inner.encode("utf-8")))
    return parse_invoice_element(root)
