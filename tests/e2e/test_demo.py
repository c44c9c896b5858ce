"""`bmc demo`, the main job, as a user runs it: one command, a summary in out/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port_base

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_demo_runs_end_to_end_and_writes_its_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    base = free_port_base()
    env.update(
        BMC_DATA_DIR=str(tmp_path / "data"),
        BMC_PORT_BASE=str(base),
        BMC_GATEWAY_PORT=str(base),
        BMC_EDGE_PORT=str(base + 443),
        COLUMNS="160",
    )
    bmc = Path(sys.executable).parent / "bmc"
    result = subprocess.run(
        [str(bmc), "demo", "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] is True
    assert {s["health"] for s in summary["services"]} == {"SERVING"}
    assert all(c["passed"] for c in summary["security_checks"])
    catalog = summary["catalog"]
    assert catalog["rows_read"] == 50_018
    assert catalog["rejected"] == 0
    assert catalog["lookups"]["AZUCAR-REFINADA"]["eligible"] is False
    assert catalog["lookups"]["CAFE-PERGAMINO"]["eligible"] is True
    assert catalog["missing"] == ["products/NO-EXISTE"]
    meshed = summary["mesh"]
    assert (meshed["answered"], meshed["failures"]) == (meshed["lookups"], []), "no lookup failed"
    assert meshed["rbac_refusal"]["code"] == "PERMISSION_DENIED"
    assert meshed["moved"]["product-0"]["RBAC denied"] == 1
    noticed = ("ejections", "health check failures", "retries")
    assert any(figures.get(n, 0) for figures in meshed["moved"].values() for n in noticed), meshed["moved"]
    assert {s["name"] for s in summary["services"]} >= {"product-0", "product-1", "edge"}
    registrations = summary["invoices"]
    assert registrations["registered"] == 38
    reasons = sorted(r for found in registrations["rejected"].values() for r in found)
    assert reasons == ["NIT_CHECK_DIGIT_MISMATCH", "PRODUCT_NOT_ELIGIBLE"]
    assert registrations["chain_intact"] is True
    assert registrations["events_published"] >= 38
    charges = summary["commissions"]
    assert charges["commissions"] == 38, "every registered invoice charged from the event stream"
    assert charges["ok"] is True
    settlement = (tmp_path / "out").glob("settlement-*.csv")
    rows = next(settlement).read_text().splitlines()
    assert len(rows) == 1 + 38
    signed = summary["certificates"]
    assert (signed["certificates"], signed["files_match_their_hash"], signed["ok"]) == (38, 38, True)
    assert len(list((tmp_path / "out" / "certificates").glob("BMC-CR-*.pdf"))) == 38
    read = summary["ocr"]
    assert read["ok"] is True
    assert read["fields_right"] >= 0.9 * read["fields"]
    rest = summary["rest"]
    assert (rest["token"], rest["verification_state"], rest["ok"]) == (True, "CERTIFICATE_STATE_VALID", True)
    assert rest["certified_invoices_listed"] >= 38
    assert rest["gateway"] == f"https://localhost:{base + 443}", "REST through the edge"
    assert "Certificado válido" in (tmp_path / "out" / "verify.html").read_text()
    assert json.loads((tmp_path / "out" / "openapi.json").read_text())["openapi"] == "3.1.0"
    traced = summary["trace"]
    assert traced["ok"] is True, traced
    assert traced["registered"] == 1
    hops = ("gateway", "invoice", "product", "commission", "certificate")
    assert set(traced["services"]) == {f"bmc-{name}" for name in hops}
    assert len(traced["hops"]) == 5, "edge, invoice, product lookup, commission and certificate consumers"
    observed = summary["observability"]
    assert observed["ok"] is True, observed
    assert observed["registrations_counted"] == registrations["registered"] + 1, (
        "Prometheus counted each registration: the file's and the traced one"
    )
    assert observed["lag"], "the consumers' lag was measured"
    assert not any(observed["lag"].values()), "and is back to 0"
