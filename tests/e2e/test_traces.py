"""One registration, one trace: from the REST edge through the invoice
service and its product lookup, over the invoice stream to the commission
consumer, and over the commission stream to the certificate consumer. The
processes export over OTLP to the suite's in-memory collector
(`services/cli/traces.py`); the test starts the trace itself (its own
`traceparent`), so it knows which spans are the registration's."""

from __future__ import annotations

import uuid

import pytest

from services.cli.traces import REGISTRATION_HOPS, Trace
from tests.conftest import Platform
from tests.e2e.rest import certified_invoice
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import load_sample_catalog

pytestmark = pytest.mark.e2e


def test_a_registration_is_one_trace_across_services_and_streams(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("one backend is enough: the spans do not depend on it")
    assert platform.traces is not None
    load_sample_catalog(platform.settings)
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    platform.traces.watch(trace_id)

    certified_invoice(platform, traceparent=f"00-{trace_id}-{caller}-01")

    # Each process exports on its own schedule: wait until every part has arrived and nothing hangs loose.
    expected = [*REGISTRATION_HOPS, ("bmc-invoice", "SERVER", "InvoiceService/GetInvoice")]

    def arrived() -> bool:
        return Trace(platform.traces.spans(trace_id)).complete(expected, caller)  # type: ignore[union-attr]

    try:
        wait_until(arrived, 60, "the spans from the edge to the certificate consumer")
    finally:
        trace = Trace(platform.traces.spans(trace_id))
        print(trace)

    edge = trace.find("bmc-gateway", "SERVER", "POST /v1/invoices")
    assert edge is not None
    assert edge.parent_id == caller, "the edge continues the caller's trace"
    assert edge.attributes.get("http.route") == "/v1/invoices", "named by route, never by path"
    registering = trace.find("bmc-invoice", "SERVER", "InvoiceService/RegisterInvoice", under=edge)
    assert registering is not None, "the invoice service's span is a child of the edge's call"
    lookup = trace.find("bmc-product", "SERVER", "ProductService/", under=registering)
    assert lookup is not None, "the product lookup is in the registration's trace"
    assert trace.find("bmc-invoice", "CLIENT", "", under=registering) is not None
    assert any(s.attributes.get("db.system") == "postgresql" and trace.descends(s, registering) for s in trace.spans), (
        "the asyncpg instrumentation's statements are in it"
    )

    charging = trace.find("bmc-commission", "CONSUMER", "invoice.events process", under=registering)
    assert charging is not None, "the commission consumer continues the registration's trace"
    assert charging.parent_id in charging.links, "and links to the span that recorded the event"
    assert trace.by_id[charging.parent_id].service == "bmc-invoice"
    certifying = trace.find("bmc-certificate", "CONSUMER", "commission.events process", under=charging)
    assert certifying is not None, "the certificate consumer continues the commission consumer's span"
    assert certifying.parent_id in certifying.links
    assert trace.find("bmc-invoice", "SERVER", "InvoiceService/GetInvoice", under=certifying) is not None, (
        "what the certificate consumer asks the invoice service is in the trace too"
    )

    assert not trace.loose(caller), "every span hangs from the trace"
    assert {s.trace_id for s in trace.spans} == {trace_id}
