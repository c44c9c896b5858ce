"""`bmc ocr FILE --submit` as a back office runs it: a scanned invoice read,
each line matched to the catalog, and the draft registered, but only once a
person confirmed the key fields Tesseract read without any check (a misread
CUFE would otherwise be registered as if it existed); and the invoice
service enforcing the same rule for any client.

Deterministic on any day: the services run on a pinned calendar date
(`BMC_CALENDAR_DATE`), so the scanned invoice, dated three days before it,
is the same image every run, and inside the registration window."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from bmc.ocr.v1 import ocr_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from services.cli.cluster import Cluster
from services.ocr.samples import SampleInvoice, render_pdf, sample_invoices, scan
from tests.conftest import Platform, make_settings
from tests.integration.clients import Client
from tests.integration.invoice_helpers import load_sample_catalog, registry
from tests.integration.product_helpers import reason, violations

pytestmark = pytest.mark.e2e
TODAY = dt.date(2026, 11, 30)  # the services' pinned date


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    settings = make_settings(tmp_path_factory.mktemp("pinned"), "embedded", calendar_date=TODAY)
    with Cluster(settings, services=["product", "invoice", "ocr"]) as cluster:
        yield Platform("embedded", cluster.settings, cluster)


def _bmc(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    env.update(platform.settings.as_environment(), COLUMNS="200")
    bmc = Path(sys.executable).parent / "bmc"
    return subprocess.run([str(bmc), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def _scanned(tmp_path: Path) -> tuple[SampleInvoice, Path]:
    recent = TODAY - dt.timedelta(days=3)  # inside the registration window
    # A production invoice: its CUFE hashes the issuer's own technical key, so nothing recomputes it here.
    invoice = dataclasses.replace(
        next(i for i in sample_invoices(6) if not i.with_qr), issue_date=recent, technical_key="9" * 40, environment=1
    )
    scanned = tmp_path / "factura.png"
    scanned.write_bytes(scan(render_pdf(invoice), 4))
    return invoice, scanned


def _registered(platform: Platform, broker: str) -> list[invoice_pb2.Invoice]:
    with registry(platform.settings, role="operator") as invoices:
        return list(invoices.ListInvoices(invoice_service_pb2.ListInvoicesRequest(broker=broker)).invoices)


def test_an_unconfirmed_ocr_read_is_refused_then_registered_once_a_person_confirms_it(
    pinned: Platform, tmp_path: Path
) -> None:
    platform = pinned
    load_sample_catalog(platform.settings)
    invoice, scanned = _scanned(tmp_path)
    broker = f"brokers/ocr-{uuid.uuid4().hex[:8]}"

    # No QR code: the number and the CUFE come from Tesseract, and nothing on the page checks them.
    refused = _bmc(platform, "ocr", str(scanned), "--submit", "--broker", broker)
    assert refused.returncode == 0, refused.stdout + refused.stderr
    assert "not registered" in refused.stdout
    assert "read by OCR and not confirmed by a person" in refused.stdout
    assert "cufe" in refused.stdout
    assert "number" in refused.stdout
    assert _registered(platform, broker) == [], "nothing is registered before a person confirms"

    # A person checks the document and gives the right values (whatever Tesseract made of them).
    corrected = [
        f"--confirm=cufe={invoice.cufe}",
        f"--confirm=number={invoice.number}",
        f"--confirm=seller_nit={invoice.seller[1]}",
        f"--confirm=buyer_id={invoice.buyer[1]}",
        f"--confirm=total={invoice.total:.2f}",
    ]
    result = _bmc(platform, "ocr", str(scanned), "--submit", "--broker", broker, *corrected)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not registered" not in result.stdout, result.stdout
    assert "registered" in result.stdout
    for line in invoice.lines:
        assert line.description in result.stdout  # each line shown with the product chosen for it

    (registered,) = _registered(platform, broker)
    assert (registered.number, registered.cufe) == (invoice.number, invoice.cufe)
    assert registered.totals.payable_amount == f"{invoice.total:.2f}"
    assert all(line.product_code for line in registered.lines)
    # The registration records who vouched for what.
    assert registered.source_format == invoice_pb2.SOURCE_FORMAT_OCR
    assert {"cufe", "number"} <= set(registered.ocr_review.confirmed_fields)
    assert registered.ocr_review.extraction.startswith("extractions/")
    assert registered.ocr_review.confirmed_by == "bmc-cli"

    again = _bmc(
        platform, "ocr", str(scanned), "--submit", "--broker", broker, "--product", "MAIZ-AMARILLO", *corrected
    )
    assert "not registered" in again.stdout
    assert "ALREADY_EXISTS" in again.stdout


def test_the_invoice_service_refuses_an_ocr_draft_a_person_did_not_confirm(pinned: Platform, tmp_path: Path) -> None:
    """Any client, not only the CLI: the invoice service reads the extraction back."""
    platform = pinned
    load_sample_catalog(platform.settings)
    invoice, scanned = _scanned(tmp_path)
    broker = f"brokers/ocr-{uuid.uuid4().hex[:8]}"
    with Client(platform.settings, "ocr", ocr_service_pb2_grpc.OcrServiceStub, "operator") as reader:
        extraction: ocr_pb2.Extraction = reader.ExtractInvoice(
            ocr_service_pb2.ExtractInvoiceRequest(content=scanned.read_bytes(), filename="factura.png"), timeout=120
        )
    assert {"number", "cufe"} <= set(extraction.fields_to_confirm)
    draft = invoice_pb2.Invoice()
    draft.CopyFrom(extraction.draft)
    draft.broker = broker
    draft.ocr_review.SetInParent()
    for line in draft.lines:
        line.product_code = "MAIZ-AMARILLO"

    def register(draft: invoice_pb2.Invoice) -> grpc.RpcError:
        with registry(platform.settings, role="operator") as invoices, pytest.raises(grpc.RpcError) as caught:
            invoices.RegisterInvoice(invoice_service_pb2.RegisterInvoiceRequest(invoice=draft))
        return caught.value

    unnamed = register(draft)  # a review that does not say which extraction it is
    assert unnamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations(unnamed)] == ["invoice.ocr_review.extraction"]

    draft.ocr_review.extraction = extraction.name
    nobody = register(draft)  # nothing confirmed
    assert nobody.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(nobody) == "OCR_CONFIRMATION_REQUIRED"
    assert {"number", "cufe"} <= set(nobody.details().split(": ", 1)[1].split(";")[0].split(", "))

    draft.ocr_review.confirmed_fields.append("cufe")
    draft.cufe = invoice.cufe
    draft.buyer.id.number = "800197268" if draft.buyer.id.number != "800197268" else "800197269"
    halfway = register(draft)  # the CUFE confirmed; the number not, and a NIT changed without saying so
    assert halfway.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "number" in halfway.details()
    assert "buyer_id" in halfway.details()
    assert "cufe" not in halfway.details().split(": ", 1)[1]

    draft.ocr_review.extraction = "extractions/" + "0" * 32  # someone else's, or none at all
    unknown = register(draft)
    assert violations(unknown) == [("invoice.ocr_review.extraction", "EXTRACTION_NOT_FOUND")]
    assert _registered(platform, broker) == []
