"""Synthetic, internally consistent DIAN test-environment invoices (right
NIT check digits, right CUFE, totals that add up) for the demo and the
benchmarks; and their CSV form as `ImportInvoices` reads it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterator, Sequence
from decimal import Decimal

from google.type import date_pb2

from bmc.common.v1 import party_pb2, tax_pb2
from bmc.invoice.v1 import invoice_pb2
from services.dian import cufe
from services.dian.nit import check_digit
from services.invoice.conversion import document_from_proto
from services.invoice.documents import CSV_COLUMNS

SELLERS = [("900508908", "Agropecuaria El Llano S.A.S."), ("901234567", "Cooperativa Cafetera del Huila"),
           ("830044858", "Hacienda La Esperanza Ltda."), ("900108281", "Pesquera del Magdalena S.A.")]  # fmt: skip
BUYERS = [("860034313", "Molinos del Centro S.A."), ("890903938", "Alimentos Cárnicos S.A.S."),
          ("860071250", "Comercializadora Andina S.A.")]  # fmt: skip
# IVA rate (%) of each sample commodity (domain.md: 5% art. 468-1, excluded/exempt 0).
VAT = dict.fromkeys(
    ("MAIZ-AMARILLO", "MAIZ-BLANCO", "ARROZ-PADDY", "CAFE-PERGAMINO", "CACAO-GRANO", "PALMA-RFF"), "5"
) | (dict.fromkeys(("NOVILLO-GORDO", "LECHE-CRUDA", "TILAPIA-ROJA", "PAPA-PASTUSA"), "0"))


def party(number: str, name: str) -> party_pb2.Party:
    """A party identified by its NIT, with the right check digit."""
    return party_pb2.Party(
        id=party_pb2.PartyId(
            type=party_pb2.IDENTIFICATION_TYPE_NIT, number=number, check_digit=str(check_digit(number))
        ),
        legal_name=name,
    )


def build_invoice(
    number: str,
    product: str,
    quantity: Decimal,
    price: Decimal,
    rate: Decimal,
    issue_date: dt.date,
    seller: tuple[str, str] = SELLERS[0],
    buyer: tuple[str, str] = BUYERS[0],
    issue_time: str = "10:15:00-05:00",
    broker: str = "",
) -> invoice_pb2.Invoice:
    """A one-line test-environment invoice whose CUFE is right and whose totals add up."""
    extension = quantity * price
    iva = (extension * rate / 100).quantize(Decimal("0.01"))
    tax = invoice_pb2.TaxSubtotal(
        scheme=tax_pb2.TAX_SCHEME_IVA, percent=f"{rate:.2f}", taxable_amount=f"{extension:.2f}", tax_amount=f"{iva:.2f}"
    )
    proto = invoice_pb2.Invoice(
        number=number,
        cufe="0" * 96,
        environment=tax_pb2.DIAN_ENVIRONMENT_TEST,
        issue_date=date_pb2.Date(year=issue_date.year, month=issue_date.month, day=issue_date.day),
        issue_time=issue_time,
        currency_code="COP",
        operation_type=invoice_pb2.OPERATION_TYPE_PURCHASE,
        seller=party(*seller),
        buyer=party(*buyer),
        lines=[
            invoice_pb2.InvoiceLine(
                line_number=1,
                product_code=product,
                description=product.replace("-", " ").title(),
                quantity=str(quantity),
                unit_code="TNE",
                unit_price=str(price),
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


def invoices(
    count: int, today: dt.date, products: Sequence[str] = tuple(VAT), seed: int = 5, prefix: str = "SETP"
) -> Iterator[invoice_pb2.Invoice]:
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    for n in range(count):
        product = rng.choice(products)
        yield build_invoice(
            number=f"{prefix}{seed:03d}{n:07d}",
            product=product,
            quantity=Decimal(rng.randrange(1, 40)),
            price=Decimal(rng.randrange(200_000, 3_000_000, 1_000)),
            rate=Decimal(VAT.get(product, "0")),
            issue_date=today - dt.timedelta(days=rng.randrange(1, 25)),
            seller=rng.choice(SELLERS),
            buyer=rng.choice(BUYERS),
            issue_time=f"{rng.randrange(7, 18):02d}:{rng.randrange(60):02d}:00-05:00",
        )


def to_csv(protos: Sequence[invoice_pb2.Invoice]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for p in protos:
        for line in p.lines:
            tax = line.taxes[0]
            writer.writerow(
                {
                    "number": p.number,
                    "cufe": p.cufe,
                    "environment": str(p.environment),
                    "issue_date": f"{p.issue_date.year:04d}-{p.issue_date.month:02d}-{p.issue_date.day:02d}",
                    "issue_time": p.issue_time,
                    "currency": p.currency_code,
                    "seller_nit": p.seller.id.number,
                    "seller_dv": p.seller.id.check_digit,
                    "seller_name": p.seller.legal_name,
                    "buyer_id_type": "31",
                    "buyer_id": p.buyer.id.number,
                    "buyer_dv": p.buyer.id.check_digit,
                    "buyer_name": p.buyer.legal_name,
                    "line_number": str(line.line_number),
                    "product_code": line.product_code,
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_code": line.unit_code,
                    "unit_price": line.unit_price,
                    "line_extension_amount": line.line_extension_amount,
                    "iva_percent": tax.percent,
                    "iva_amount": tax.tax_amount,
                    "payable_amount": p.totals.payable_amount,
                }
            )
    return out.getvalue().encode()
