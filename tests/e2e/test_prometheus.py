"""A real Prometheus (Debian's, as `bmc up --observe` starts it) scraping
the running platform: every process and sidecar is up, registrations are
counted, and when the commission consumer is killed its lag grows (the
producer measures it), the ConsumerStalled alert is raised from the live
series and `bmc status` shows the service down; once it is back, the lag
returns to 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.observe import Prometheus
from tests.conftest import Platform
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing: Debian's package (make setup)"),
]
BMC = str(Path(sys.executable).parent / "bmc")
LAG = 'max(bmc_stream_consumer_lag_entries{stream="invoice.events",group="commission"})'


@pytest.fixture
def prometheus(platform: Platform) -> Iterator[Prometheus]:
    if platform.backend != "embedded":
        pytest.skip("one Prometheus run is enough: the embedded backend's")
    with Prometheus(platform.settings, platform.cluster.scrape_targets()) as observer:
        yield observer


def _value(prometheus: Prometheus, expression: str) -> float | None:
    result = prometheus.query(expression)
    return float(result[0]["value"][1]) if result else None


def _bmc_status(prometheus: Prometheus) -> str:
    shown = subprocess.run(
        [BMC, "status", "--prometheus", prometheus.url],
        capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    return shown.stdout


def test_prometheus_scrapes_every_process_and_sidecar(platform: Platform, prometheus: Prometheus) -> None:
    targets = platform.cluster.scrape_targets()
    expected = sum(len(t) for t in targets.values())
    wait_until(lambda: _value(prometheus, "count(up == 1)") == expected, 30, f"all {expected} targets up: {targets}")
    assert _value(prometheus, 'count(up{job="envoy"} == 1)') == len(targets["envoy"])
    assert {"ConsumerStalled", "RegistrationErrorBudgetBurn", "MutualTlsFailures"} <= set(prometheus.rule_names())


def test_a_killed_consumer_shows_as_lag_and_a_stalled_alert(platform: Platform, prometheus: Prometheus) -> None:
    load_sample_catalog(platform.settings)
    wait_until(lambda: _value(prometheus, LAG) == 0, 45, "no commission lag to begin with")
    platform.cluster.kill("commission")
    try:
        with registry(platform.settings) as reg:
            for _ in range(4):
                reg.register(invoice())
        wait_until(lambda: (_value(prometheus, LAG) or 0) >= 4, 45, "the commission lag counts the 4 invoices")
        stalled = 'ALERTS{alertname="ConsumerStalled", group="commission", stream="invoice.events"}'
        wait_until(lambda: bool(prometheus.query(stalled)), 45, "ConsumerStalled raised (pending its 5 minutes)")
        wait_until(lambda: "DOWN" in _bmc_status(prometheus), 30, "bmc status shows the commission service down")
        shown = _bmc_status(prometheus)
        assert "invoice.events" in shown, shown
        assert "Streams" in shown, shown
        accepted = _value(prometheus, 'sum(bmc_invoice_registrations_total{outcome="accepted"})')
        assert accepted is not None
        assert accepted >= 4
    finally:
        platform.cluster.restart("commission")
    wait_until(lambda: _value(prometheus, LAG) == 0, 60, "the lag back to 0 once the consumer is back")
