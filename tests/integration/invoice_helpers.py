"""Building valid invoices and talking to a running invoice service in tests."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from services.cli.products import stage_for_import
from services.invoice.synth import build_invoice
from services.kit.settings import Settings
from tests.conftest import ROOT
from tests.integration.clients import Client
from tests.integration.product_helpers import catalog, result_of


def invoice(
    product: str = "MAIZ-AMARILLO",
    quantity: str = "10",
    price: str = "1250000",
    issue_date: dt.date | None = None,
    seller: str = "900508908",
    number: str | None = None,
    broker: str = "",
) -> invoice_pb2.Invoice:
    """A test-environment invoice (5% IVA) whose CUFE is right and whose totals add up."""
    return build_invoice(
        number=number or f"SETP{uuid.uuid4().int % 10**9:09d}",
        product=product,
        quantity=Decimal(quantity),
        price=Decimal(price),
        rate=Decimal(5),
        issue_date=issue_date or dt.date.today() - dt.timedelta(days=2),
        seller=(seller, "Agropecuaria El Llano S.A.S."),
        buyer=("860034313", "Molinos del Centro S.A."),
        broker=broker,
    )


class Registry(Client):
    def __init__(self, settings: Settings, role: str, tenant: str = "") -> None:
        super().__init__(settings, "invoice", invoice_service_pb2_grpc.InvoiceServiceStub, role, tenant)

    def register(self, proto: invoice_pb2.Invoice, request_id: str = "") -> invoice_pb2.Invoice:
        return self.RegisterInvoice(invoice_service_pb2.RegisterInvoiceRequest(invoice=proto, request_id=request_id))  # type: ignore[no-any-return]


@contextmanager
def registry(settings: Settings, role: str = "broker", tenant: str = "acme") -> Iterator[Registry]:
    client = Registry(settings, role, tenant if role == "broker" else "")
    try:
        yield client
    finally:
        client.close()


def load_sample_catalog(settings: Settings) -> None:
    with catalog(settings) as cat:
        sample = str(ROOT / "samples" / "catalog" / "commodities.csv")
        result_of(cat.import_and_wait(stage_for_import(settings, [sample])))
