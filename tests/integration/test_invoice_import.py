# ruff: noqa: E501  (a UBL template reads best unwrapped)
"""ImportInvoices: CSV, UBL in a ZIP, AttachedDocument, hostile input."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import time
import zipfile
from decimal import Decimal

import grpc
import pytest
from google.longrunning import operations_pb2

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.invoice.documents import CSV_COLUMNS
from tests.conftest import SHARED, Platform
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry
from tests.integration.product_helpers import violations

UBL = """<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ProfileExecutionID>2</cbc:ProfileExecutionID><cbc:ID>{number}</cbc:ID>
 <cbc:UUID schemeID="2" schemeName="CUFE-SHA384">{cufe}</cbc:UUID>
 <cbc:IssueDate>{date}</cbc:IssueDate><cbc:IssueTime>{time}</cbc:IssueTime>
 <cbc:DocumentCurrencyCode>COP</cbc:DocumentCurrencyCode>
 <cac:AccountingSupplierParty><cac:Party><cac:PartyTaxScheme><cbc:RegistrationName>{seller_name}</cbc:RegistrationName>
  <cbc:CompanyID schemeID="{seller_dv}" schemeName="31">{seller}</cbc:CompanyID></cac:PartyTaxScheme></cac:Party></cac:AccountingSupplierParty>
 <cac:AccountingCustomerParty><cac:Party><cac:PartyTaxScheme><cbc:RegistrationName>{buyer_name}</cbc:RegistrationName>
  <cbc:CompanyID schemeID="{buyer_dv}" schemeName="31">{buyer}</cbc:CompanyID></cac:PartyTaxScheme></cac:Party></cac:AccountingCustomerParty>
 <cac:TaxTotal><cbc:TaxAmount currencyID="COP">{iva}</cbc:TaxAmount><cac:TaxSubtotal>
  <cbc:TaxableAmount currencyID="COP">{subtotal}</cbc:TaxableAmount><cbc:TaxAmount currencyID="COP">{iva}</cbc:TaxAmount>
  <cac:TaxCategory><cbc:Percent>{percent}</cbc:Percent><cac:TaxScheme><cbc:ID>01</cbc:ID></cac:TaxScheme></cac:TaxCategory>
 </cac:TaxSubtotal></cac:TaxTotal>
 <cac:LegalMonetaryTotal><cbc:LineExtensionAmount currencyID="COP">{subtotal}</cbc:LineExtensionAmount>
  <cbc:TaxExclusiveAmount currencyID="COP">{subtotal}</cbc:TaxExclusiveAmount>
  <cbc:TaxInclusiveAmount currencyID="COP">{total}</cbc:TaxInclusiveAmount>
  <cbc:PayableAmount currencyID="COP">{total}</cbc:PayableAmount></cac:LegalMonetaryTotal>
 <cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:InvoicedQuantity unitCode="TNE">{quantity}</cbc:InvoicedQuantity>
  <cbc:LineExtensionAmount currencyID="COP">{subtotal}</cbc:LineExtensionAmount>
  <cac:TaxTotal><cbc:TaxAmount currencyID="COP">{iva}</cbc:TaxAmount><cac:TaxSubtotal>
   <cbc:TaxableAmount currencyID="COP">{subtotal}</cbc:TaxableAmount><cbc:TaxAmount currencyID="COP">{iva}</cbc:TaxAmount>
   <cac:TaxCategory><cbc:Percent>{percent}</cbc:Percent><cac:TaxScheme><cbc:ID>01</cbc:ID></cac:TaxScheme></cac:TaxCategory>
  </cac:TaxSubtotal></cac:TaxTotal>
  <cac:Item><cbc:Description>Maíz amarillo</cbc:Description>
   <cac:StandardItemIdentification><cbc:ID>{product}</cbc:ID></cac:StandardItemIdentification></cac:Item>
  <cac:Price><cbc:PriceAmount currencyID="COP">{price}</cbc:PriceAmount><cbc:BaseQuantity unitCode="TNE">1</cbc:BaseQuantity></cac:Price>
 </cac:InvoiceLine>
</Invoice>"""


def ubl(proto: invoice_pb2.Invoice) -> bytes:
    """The UBL 2.1 XML of a test invoice (what an issuer's software emits)."""
    line = proto.lines[0]
    return UBL.format(
        number=proto.number, cufe=proto.cufe, date=f"{proto.issue_date.year:04d}-{proto.issue_date.month:02d}-{proto.issue_date.day:02d}",
        time=proto.issue_time, seller=proto.seller.id.number, seller_dv=proto.seller.id.check_digit,
        seller_name=proto.seller.legal_name, buyer=proto.buyer.id.number, buyer_dv=proto.buyer.id.check_digit,
        buyer_name=proto.buyer.legal_name, subtotal=proto.totals.line_extension_amount, iva=proto.taxes[0].tax_amount,
        total=proto.totals.payable_amount, quantity=line.quantity, price=line.unit_price, product=line.product_code,
        percent=proto.taxes[0].percent,
    ).encode()  # fmt: skip


def csv_bytes(protos: list[invoice_pb2.Invoice]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for p in protos:
        line = p.lines[0]
        writer.writerow({
            "number": p.number, "cufe": p.cufe, "environment": "2",
            "issue_date": f"{p.issue_date.year:04d}-{p.issue_date.month:02d}-{p.issue_date.day:02d}",
            "issue_time": p.issue_time, "currency": "COP", "seller_nit": p.seller.id.number,
            "seller_dv": p.seller.id.check_digit, "seller_name": p.seller.legal_name, "buyer_id_type": "31",
            "buyer_id": p.buyer.id.number, "buyer_dv": p.buyer.id.check_digit, "buyer_name": p.buyer.legal_name,
            "line_number": "1", "product_code": line.product_code, "description": "Maíz", "quantity": line.quantity,
            "unit_code": "TNE", "unit_price": line.unit_price, "line_extension_amount": line.line_extension_amount,
            "iva_percent": "5.00", "iva_amount": line.taxes[0].tax_amount, "payable_amount": p.totals.payable_amount,
        })  # fmt: skip
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def registration(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def _import(platform: Platform, content: bytes, filename: str) -> invoice_pb2.ImportInvoicesResponse:
    with registry(platform.settings) as reg:
        operation = reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, filename=filename))
        deadline = time.monotonic() + 60
        while not operation.done:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            operation = reg.GetOperation(operations_pb2.GetOperationRequest(name=operation.name))
    assert not operation.HasField("error"), operation.error
    response = invoice_pb2.ImportInvoicesResponse()
    operation.response.Unpack(response)
    return response


def test_csv_import_registers_good_invoices_and_reports_bad_ones(registration: Platform) -> None:
    good = [invoice(), invoice(quantity="3")]
    bad = invoice()
    bad.seller.id.check_digit = str((int(bad.seller.id.check_digit) + 1) % 10)
    result = _import(registration, csv_bytes([*good, bad]), "facturas.csv")
    assert (result.registered, result.rejected) == (2, 1)
    assert [d.number for d in result.documents] == [good[0].number, good[1].number, bad.number]
    assert result.documents[2].issues[0].reason == "NIT_CHECK_DIGIT_MISMATCH"
    assert result.documents[2].source == "line 4"


def test_zip_of_ubl_invoices_with_a_credit_note_among_them(registration: Platform) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("f1.xml", ubl(invoice()))
        z.writestr("f2.xml", ubl(invoice(quantity="2", price="980000")))
        credit = SHARED / "corpus" / "dian-xml" / "stenfrank-ubl21dian__creditnote_singned_dian_v2.xml"
        if credit.exists():
            z.writestr("nc.xml", credit.read_bytes())
        z.writestr("readme.txt", "ignored")
    result = _import(registration, archive.getvalue(), "lote.zip")
    assert result.registered == 2
    assert all(d.invoice for d in result.documents[:2])
    if len(result.documents) == 3:
        assert result.documents[2].issues[0].reason == "UNSUPPORTED_DOCUMENT"


def test_single_ubl_invoice_keeps_its_amounts(registration: Platform) -> None:
    proto = invoice(quantity="7", price="1000000")
    result = _import(registration, ubl(proto), "f.xml")
    with registry(registration.settings) as reg:
        registered = reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=result.documents[0].invoice))
    assert Decimal(registered.totals.payable_amount) == Decimal(proto.totals.payable_amount)
    assert registered.source_format == invoice_pb2.SOURCE_FORMAT_UBL_INVOICE
    assert registered.cufe == proto.cufe


def test_oversized_zip_entries_are_refused_not_inflated(registration: Platform) -> None:
    archive = io.BytesIO()
    noise = random.Random(5).randbytes(6 * 2**20).hex().encode()  # 12 MiB that barely compresses: no bomb
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("large.xml", b"<a>" + noise + b"</a>")
    result = _import(registration, archive.getvalue(), "large.zip")
    assert result.documents[0].issues[0].reason == "TOO_LARGE"


def test_a_decompression_bomb_is_refused_at_once(registration: Platform) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.xml", b"<a>" + b" " * (9 * 2**20) + b"</a>")
    with registry(registration.settings) as reg, pytest.raises(grpc.RpcError) as caught:
        reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=archive.getvalue(), filename="bomb.zip"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [("content", "DECOMPRESSION_BOMB")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><Invoice>&x;</Invoice>', "FORBIDDEN"),
        (b"\x00\x01\x02 not a document", "UNREADABLE_DOCUMENT"),
    ],
)
def test_hostile_or_unreadable_uploads_are_refused_at_once(registration: Platform, content: bytes, reason: str) -> None:
    with registry(registration.settings) as reg, pytest.raises(grpc.RpcError) as caught:
        reg.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, filename="x"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][1].startswith(reason)


def test_imports_are_listed_per_tenant_and_can_be_cancelled(registration: Platform) -> None:
    from services.invoice.synth import invoices, to_csv

    content = to_csv(list(invoices(600, dt.date.today(), seed=41, prefix="CANC")))
    with (
        registry(registration.settings, tenant="omega") as omega,
        registry(registration.settings, tenant="sigma") as sigma,
    ):
        started = omega.ImportInvoices(invoice_service_pb2.ImportInvoicesRequest(content=content, filename="big.csv"))
        cancelled = omega.CancelOperation(operations_pb2.CancelOperationRequest(name=started.name))
        mine = omega.ListOperations(operations_pb2.ListOperationsRequest(page_size=10))
        theirs = sigma.ListOperations(operations_pb2.ListOperationsRequest(page_size=100))
        with pytest.raises(grpc.RpcError) as hidden:
            sigma.GetOperation(operations_pb2.GetOperationRequest(name=started.name))
        deadline = time.monotonic() + 60
        while not (final := omega.GetOperation(operations_pb2.GetOperationRequest(name=started.name))).done:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert mine.operations[0].name == started.name
    assert started.name not in {o.name for o in theirs.operations}
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert cancelled.name == started.name
    if final.HasField("error"):  # it may have finished before the request arrived
        assert final.error.code == grpc.StatusCode.CANCELLED.value[0]
