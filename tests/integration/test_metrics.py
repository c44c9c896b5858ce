"""Every process of the running platform (each replica of each service, and
the REST gateway) serves Prometheus /metrics on a port of its own: RPCs by
method and status code with their latency, the event streams (consumed,
lag, pending), the outbox relay, and no label that a caller's data could
multiply (a tenant, an invoice number, a NIT, a path)."""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2  # noqa: F401 - their descriptors, in the default pool
from grpc_reflection.v1alpha import reflection_pb2  # noqa: F401
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.gateway.routes import routes_of
from services.kit.metrics import GATEWAY_OFFSET, metrics_port
from services.kit.topology import SERVICES
from services.mesh.spec import load as load_mesh
from tests.conftest import Platform
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry

# What a label may name: none of them is a value a caller chooses.
LABELS = {
    "grpc_service", "grpc_method", "grpc_type", "grpc_code", "stream", "group", "relay", "consumer",
    "route", "method", "status", "le", "quantile", "outcome", "reason", "result", "source", "field",
    "kind", "state", "dependency",
    "generation", "implementation", "major", "minor", "patchlevel", "version",  # the Python runtime's own
}  # fmt: skip
# The shape of a caller's data in a label value: a long number (invoice numbers, NITs), a UUID, a tenant.
CALLER_DATA = re.compile(r"\d{6,}|[0-9a-f]{8}-[0-9a-f]{4}|brokers/|acme")


def _processes(platform: Platform) -> dict[str, int]:
    """Every process's metrics port: `invoice-0`, `invoice-1`…, `gateway`."""
    spec = load_mesh() if platform.settings.mesh else None
    ports = {"gateway": metrics_port(platform.settings, GATEWAY_OFFSET)}
    for name, service in SERVICES.items():
        for replica in range(spec.services[name].replicas if spec else 1):
            ports[f"{name}-{replica}"] = metrics_port(platform.settings, service.port_offset, replica)
    return ports


def _scrape(port: int) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _total(scraped: dict[str, dict[str, list[Sample]]], name: str, **labels: str) -> float:
    """The sum over every process of the samples called `name` with `labels`."""
    return sum(
        sample.value
        for families in scraped.values()
        for samples in families.values()
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def scraped(platform: Platform) -> dict[str, dict[str, list[Sample]]]:
    """Every process's metrics after invoices were registered and the
    commission and certificate consumers took them."""
    load_sample_catalog(platform.settings)
    before = {p: _scrape(port) for p, port in _processes(platform).items()}
    with registry(platform.settings) as reg:
        for _ in range(3):
            reg.register(invoice())

    def certified() -> bool:
        now = {p: _scrape(port) for p, port in _processes(platform).items()}
        return all(
            _total(now, name, **labels) >= _total(before, name, **labels) + 3
            for name, labels in (
                ("bmc_stream_events_consumed_total", {"stream": "invoice.events", "group": "commission"}),
                ("bmc_certificates_issued_total", {}),
            )
        )

    wait_until(certified, timeout=90)
    return {p: _scrape(port) for p, port in _processes(platform).items()}


def test_every_process_serves_its_metrics(scraped: dict[str, dict[str, list[Sample]]]) -> None:
    for process, families in scraped.items():
        expected = {"bmc_http_requests", "bmc_http_request_seconds"} if process == "gateway" else {
            "grpc_server_started", "grpc_server_handled", "grpc_server_handling_seconds"}  # fmt: skip
        assert expected <= set(families), f"{process}: {sorted(families)}"


def test_rpcs_are_counted_by_method_and_status_with_their_latency(
    scraped: dict[str, dict[str, list[Sample]]],
) -> None:
    registered = _total(
        scraped,
        "grpc_server_handled_total",
        grpc_service="bmc.invoice.v1.InvoiceService",
        grpc_method="RegisterInvoice",
    )
    assert registered >= 3
    assert _total(scraped, "grpc_server_handled_total", grpc_method="RegisterInvoice", grpc_code="OK") >= 3
    assert _total(scraped, "grpc_server_handling_seconds_count", grpc_method="RegisterInvoice") == registered, (
        "one latency observation per RPC"
    )
    assert _total(scraped, "grpc_server_handled_total", grpc_service="bmc.product.v1.ProductService") > 0, (
        "the product lookups the registrations made"
    )


def test_streams_and_the_outbox_are_measured(scraped: dict[str, dict[str, list[Sample]]]) -> None:
    assert _total(scraped, "bmc_outbox_published_total", relay="invoice.events") >= 3
    assert _total(scraped, "bmc_outbox_relay_delay_seconds_count", relay="invoice.events") >= 3
    assert _total(scraped, "bmc_stream_events_consumed_total", stream="invoice.events", group="commission") >= 3
    lags = [
        s for families in scraped.values() for s in families.get("bmc_stream_consumer_lag_entries", [])
        if s.labels["group"] == "commission"
    ]  # fmt: skip
    assert lags, "the commission consumer reports its lag"
    assert all(s.value >= 0 for s in lags)


def test_each_service_counts_what_it_does(scraped: dict[str, dict[str, list[Sample]]]) -> None:
    assert _total(scraped, "bmc_invoice_registrations_total", outcome="accepted") >= 3
    assert _total(scraped, "bmc_product_cache_lookups_total") >= 3, "each registration looked its product up"
    assert _total(scraped, "bmc_certificates_issued_total") >= 3, "the fixture waited for their certificates"
    families = {name for process in scraped.values() for name in process}
    assert {"bmc_ocr_pages", "bmc_ocr_fields_held", "bmc_certificates_issued", "bmc_dead_letters"} <= families


def test_dependencies_and_long_operations_are_measured(scraped: dict[str, dict[str, list[Sample]]]) -> None:
    breakers = {
        (process, s.labels["dependency"]): s.value
        for process, families in scraped.items()
        for s in families.get("bmc_circuit_breaker_state", [])
    }
    assert breakers.get(("invoice-0", "product")) == 0, f"the invoice service's breaker on products: {breakers}"
    for process, families in scraped.items():
        if process == "gateway":
            continue
        pool = {s.labels["state"]: s.value for s in families.get("bmc_db_pool_connections", [])}
        assert set(pool) == {"in_use", "idle"}, f"{process}: {pool}"
        assert pool["in_use"] + pool["idle"] >= 1, f"{process}: {pool}"
        assert families["bmc_db_pool_waiting"][0].value >= 0
    # The catalog import of the fixture (or of a test before it) went through the operations' runner.
    assert _total(scraped, "bmc_operations_finished_total", kind="import-products", state="done") >= 1
    assert _total(scraped, "bmc_operation_units_total", kind="import-products", outcome="done") >= 18
    assert _total(scraped, "bmc_operations_running", kind="import-products") == 0


def test_no_metric_carries_a_high_cardinality_label(scraped: dict[str, dict[str, list[Sample]]]) -> None:
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for process, families in scraped.items():
        for family, samples in families.items():
            for sample in samples:
                for label, value in sample.labels.items():
                    assert label in LABELS, f"{process}: {family} has label {label!r}"
                    assert not CALLER_DATA.search(value), f"{process}: {family}{{{label}={value!r}}}"
                    values[family, label].add(value)
    # Labels that name the API are bounded by it. The gateway's routes: its transcoded templates
    # (one per RPC with an HTTP rule) and its own pages.
    templates = {r.template.text for name, spec in SERVICES.items() for r in routes_of(spec.descriptor, name)}
    # (every family that carries one: prometheus-client also exposes `_created` series as families of their own)
    routes: set[str] = set().union(*(values.pop(key) for key in [k for k in values if k[1] == "route"]))
    unknown = {r for r in routes if r not in templates and "{" in r and r not in {"/{tail}", "/verify/{code}"}}
    assert not unknown, f"routes that are no template: {unknown}"
    assert len(routes - templates) <= 12, f"pages beside the API: {sorted(routes - templates)}"
    # Methods likewise: each a method of the service it is counted under (ours, health's, reflection's).
    pool = descriptor_pool.Default()
    for process, families in scraped.items():
        for sample in (s for samples in families.values() for s in samples if "grpc_method" in s.labels):
            service = pool.FindServiceByName(sample.labels["grpc_service"])
            assert service.FindMethodByName(sample.labels["grpc_method"]) is not None, (process, sample.labels)
    for key in [k for k in values if k[1] in ("grpc_method", "grpc_service")]:
        del values[key]
    widest = max(values.items(), key=lambda kv: len(kv[1]))
    assert len(widest[1]) <= 60, f"{widest[0]} takes {len(widest[1])} values"
