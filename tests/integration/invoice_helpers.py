"""Building valid invoices and talking to a running invoice service in tests."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from google.type import date_pb2

from bmc.common.v1 import party_pb2, tax_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from services.dian import cufe
from services.dian.nit import check_digit
from services.invoice.conversion import document_from_proto
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from tests.conftest import ROOT
from tests.integration.product_helpers import catalog, result_of


def nit_party(number: str, name: str) -> party_pb2.Party:
    return party_pb2.Party(
        id=party_pb2.PartyId(
            type=party_pb2.IDENTIFICATION_TYPE_NIT, number=number, check_digit=str(check_digit(number))
        ),
        legal_name=name,
    )


def invoice(
    product: str = "MAIZ-AMARILLO",
    quantity: str = "10",
    price: str = "1250000",
    issue_date: dt.date | None = None,
    seller: str = "900508908",
    number: str | None = None,
    broker: str = "",
) -> invoice_pb2.Invoice:
    """A test-environment invoice whose CUFE is right and whose totals add up."""
    extension = Decimal(quantity) * Decimal(price)
    iva = (extension * Decimal("0.05")).quantize(Decimal("0.01"))
    day = issue_date or dt.date.today() - dt.timedelta(days=2)
    tax = invoice_pb2.TaxSubtotal(
        scheme=tax_pb2.TAX_SCHEME_IVA, percent="5.00", taxable_amount=f"{extension:.2f}", tax_amount=f"{iva:.2f}"
    )
    proto = invoice_pb2.Invoice(
        number=number or f"SETP{uuid.uuid4().int % 10**9:09d}",
        cufe="0" * 96,
        environment=tax_pb2.DIAN_ENVIRONMENT_TEST,
        issue_date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
        issue_time="10:15:00-05:00",
        currency_code="COP",
        operation_type=invoice_pb2.OPERATION_TYPE_PURCHASE,
        seller=nit_party(seller, "Agropecuaria El Llano S.A.S."),
        buyer=nit_party("860034313", "Molinos del Centro S.A."),
        lines=[
            invoice_pb2.InvoiceLine(
                line_number=1,
                product_code=product,
                description="Producto",
                quantity=quantity,
                unit_code="TNE",
                unit_price=price,
                line_extension_amount=f"{extension:.2f}",
                taxes=[tax],
            )
        ],
        taxes=[tax],
        totals=invoice_pb2.MonetaryTotal(
            line_extension_amount=f"{extension:.2f}",
            tax_exclusive_amount=f"{extension:.2f}",
            tax_inclusive_amount=f"{extension + iva:.2f}",
            payable_amount=f"{extension + iva:.2f}",
        ),
        broker=broker,
    )
    proto.cufe = document_from_proto(proto).cufe_fields().cufe(cufe.TEST_ENVIRONMENT_KEY)
    return proto


class Registry:
    def __init__(self, settings: Settings, role: str, tenant: str = "") -> None:
        self.channel = sync_channel(settings, "invoice")
        self.stub = invoice_service_pb2_grpc.InvoiceServiceStub(self.channel)
        self.metadata = bearer(mint_token(settings, subject=f"{role}-{tenant or 'bmc'}", roles=[role], tenant=tenant))

    def __getattr__(self, method: str) -> object:
        rpc = getattr(self.stub, method)
        return lambda request, **kw: rpc(request, metadata=self.metadata, timeout=kw.pop("timeout", 30), **kw)

    def register(self, proto: invoice_pb2.Invoice, request_id: str = "") -> invoice_pb2.Invoice:
        return self.RegisterInvoice(invoice_service_pb2.RegisterInvoiceRequest(invoice=proto, request_id=request_id))  # type: ignore[no-any-return, operator]


@contextmanager
def registry(settings: Settings, role: str = "broker", tenant: str = "acme") -> Iterator[Registry]:
    client = Registry(settings, role, tenant if role == "broker" else "")
    try:
        yield client
    finally:
        client.channel.close()


def load_sample_catalog(settings: Settings) -> None:
    with catalog(settings) as cat:
        result_of(cat.import_and_wait([str(ROOT / "samples" / "catalog" / "commodities.csv")]))
