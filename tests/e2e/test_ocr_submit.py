"""`bmc ocr FILE --submit` as a back office runs it: a scanned invoice read,
each line matched to the catalog, and the draft registered.

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

import pytest

from bmc.invoice.v1 import invoice_service_pb2
from services.cli.cluster import Cluster
from services.ocr.samples import render_pdf, sample_invoices, scan
from tests.conftest import Platform, make_settings
from tests.integration.invoice_helpers import load_sample_catalog, registry

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


def test_a_scanned_invoice_is_read_matched_to_the_catalog_and_registered(pinned: Platform, tmp_path: Path) -> None:
    platform = pinned
    load_sample_catalog(platform.settings)
    recent = TODAY - dt.timedelta(days=3)  # inside the registration window
    invoice = dataclasses.replace(next(i for i in sample_invoices(6) if not i.with_qr), issue_date=recent)
    scanned = tmp_path / "factura.png"
    scanned.write_bytes(scan(render_pdf(invoice), 4))
    broker = f"brokers/ocr-{uuid.uuid4().hex[:8]}"

    result = _bmc(platform, "ocr", str(scanned), "--submit", "--broker", broker)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not registered" not in result.stdout, result.stdout
    assert "registered" in result.stdout
    for line in invoice.lines:
        assert line.description in result.stdout  # each line shown with the product chosen for it

    with registry(platform.settings, role="operator") as invoices:
        (registered,) = invoices.ListInvoices(invoice_service_pb2.ListInvoicesRequest(broker=broker)).invoices
    assert (registered.number, registered.cufe) == (invoice.number, invoice.cufe)
    assert registered.totals.payable_amount == f"{invoice.total:.2f}"
    assert [line.product_code for line in registered.lines] == ["CAFE-PERGAMINO", "ARROZ-PADDY", "MAIZ-AMARILLO"][
        : len(invoice.lines)
    ] or all(line.product_code for line in registered.lines)

    again = _bmc(platform, "ocr", str(scanned), "--submit", "--broker", broker, "--product", "MAIZ-AMARILLO")
    assert "not registered" in again.stdout
    assert "ALREADY_EXISTS" in again.stdout
