"""The platform with every service behind its Envoy sidecar (the default),
as real processes: the whole flow runs through the mesh (registration →
catalog lookup → commission → certificate, and the consumers' catch-up
feeds), a killed product replica costs no lookup, and the edge serves REST
and gRPC over TLS 1.3."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.cli.cluster import Cluster
from services.cli.commissions import ensure_uvt
from services.dian import calendar
from services.kit.clients import UPSTREAM_HEADER, bearer, sync_channel
from services.kit.topology import SERVICES
from services.mesh import envoy, identities
from services.mesh.access import operator
from tests.conftest import Platform, grpcurl, load_mesh, make_settings
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry


@pytest.fixture(scope="module")
def meshed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    settings = make_settings(tmp_path_factory.mktemp("mesh"), "embedded", mesh=True)
    with Cluster(settings) as cluster:
        ensure_uvt(cluster.settings, calendar.today().year)
        load_sample_catalog(cluster.settings)
        yield Platform("embedded", cluster.settings, cluster)


def _counters(platform: Platform, sidecar: str) -> dict[str, int]:
    assert platform.cluster.sidecars is not None
    return envoy.counters(platform.cluster.sidecars.admin_port(sidecar))


@dataclass
class Registering:
    """Registrations sent one at a time from a thread while a test runs."""

    registered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextmanager
def registering(platform: Platform, tenant: str) -> Iterator[Registering]:
    state, stop = Registering(), threading.Event()

    def register() -> None:
        with registry(platform.settings, tenant=tenant) as reg:
            while not stop.is_set():
                try:
                    state.registered.append(reg.register(invoice(), request_id=f"r{time.monotonic_ns()}").name)
                except grpc.RpcError as exc:
                    state.failures.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]

    worker = threading.Thread(target=register)
    worker.start()
    try:
        yield state
    finally:
        stop.set()
        worker.join(timeout=30)


def test_an_invoice_is_registered_charged_and_certified_through_the_mesh(meshed: Platform) -> None:
    before = _counters(meshed, "product-0").get("http.inbound.rbac.allowed", 0) + _counters(meshed, "product-1").get(
        "http.inbound.rbac.allowed", 0
    )
    lookups = _counters(meshed, "invoice-0").get("cluster.product.upstream_rq_total", 0)
    with registry(meshed.settings, tenant="meshed") as reg:
        registered = reg.register(invoice())
        wait_until(
            lambda: (
                reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name)).state
                == invoice_pb2.INVOICE_STATE_CERTIFIED
            ),
            timeout=60,
        )
    assert _counters(meshed, "invoice-0")["cluster.product.upstream_rq_total"] > lookups
    after = (
        _counters(meshed, "product-0")["http.inbound.rbac.allowed"]
        + _counters(meshed, "product-1")["http.inbound.rbac.allowed"]
    )
    assert after > before
    lines = [
        json.loads(line)
        for log in ("product.log", "product-1.log")
        for line in (meshed.cluster.log_dir / log).read_text().splitlines()
        if line.startswith("{") and "BatchGetProducts" in line
    ]
    assert any(line.get("via") == ["spiffe://bmc.local/service/invoice"] for line in lines), "XFCC reached the service"
    certificate = _counters(meshed, "certificate-0")
    assert certificate["cluster.invoice.upstream_rq_total"] > 0, "the certificate service read the invoice"
    assert certificate["cluster.commission.upstream_rq_total"] > 0


def test_a_product_replica_killed_during_lookups_costs_no_registration(meshed: Platform) -> None:
    """kill -9 of one product replica while registrations run (each looks the
    catalog up through the invoice sidecar) and catalog lookups come in
    through the edge: neither fails, the lookups the dead replica's sidecar
    refused were retried, the replica was ejected, and no invoice was
    registered twice."""
    edge_before = _counters(meshed, "edge")
    lookups, lookup_failures = 0, []
    names = product_service_pb2.BatchGetProductsRequest(names=["products/MAIZ-AMARILLO", "products/CAFE-PERGAMINO"])
    token = bearer(meshed.token("operator"))
    try:
        with registering(meshed, "replicas") as traffic, sync_channel(meshed.settings, "product") as channel:
            wait_until(lambda: len(traffic.registered) >= 10, timeout=30)
            meshed.cluster.processes["product"][1].kill()
            count = len(traffic.registered)
            stub = product_service_pb2_grpc.ProductServiceStub(channel)
            while len(traffic.registered) < count + 30 or lookups < 100:
                try:
                    stub.BatchGetProducts(names, metadata=token, timeout=10)
                    lookups += 1
                except grpc.RpcError as exc:
                    lookup_failures.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
                assert len(lookup_failures) < 10, lookup_failures
    finally:
        meshed.cluster.restart("product")
    assert traffic.failures == []
    assert lookup_failures == []
    edge = _counters(meshed, "edge")

    def moved(name: str) -> int:
        return edge.get(f"cluster.product.{name}", 0) - edge_before.get(f"cluster.product.{name}", 0)

    # Out of the edge's pool by ejection (its refusals) or by active health checks, whichever came first.
    assert moved("outlier_detection.ejections_enforced_total") + moved("health_check.failure") > 0
    with registry(meshed.settings, tenant="replicas") as reg:
        listed = reg.ListInvoices(invoice_service_pb2.ListInvoicesRequest(page_size=1000)).invoices
    assert len(listed) == len(traffic.registered), "none registered twice, none lost"


def test_the_edge_serves_rest_and_grpc_over_tls_1_3(meshed: Platform) -> None:
    place = meshed.cluster.sidecars.place  # type: ignore[union-attr]
    ca = meshed.settings.pki_dir / "mesh" / "ca.pem"
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with urllib.request.urlopen(f"https://localhost:{place.edge_rest[1]}/healthz", context=context, timeout=10) as r:
        assert r.status == 200
        request_id = r.headers.get("x-request-id")
    assert request_id, "the edge gives every request an id"
    status = _refused_upload(place.edge_rest[1], context, 9 << 20)
    assert status["http"] == 413
    assert status["code"] == 8, "answered as a google.rpc.Status, like the gateway's own refusals"
    assert status["details"][0]["reason"] == "BODY_TOO_LARGE"
    flags = operator(meshed.settings, "tester").grpcurl_flags
    listed = grpcurl(*flags, f"localhost:{place.edge_grpc[1]}", "list")
    assert listed.returncode == 0, listed.stderr
    assert {spec.full_name for spec in SERVICES.values()} <= set(listed.stdout.split())
    status = json.loads(grpcurl(*flags, f"localhost:{place.edge_grpc[1]}", "grpc.health.v1.Health/Check").stdout)
    assert status["status"] == "SERVING"
    product = grpcurl(*flags, "-H", f"{UPSTREAM_HEADER}: product", "-d", '{"service": "bmc.product.v1.ProductService"}',
                      f"localhost:{place.edge_grpc[1]}", "grpc.health.v1.Health/Check")  # fmt: skip
    assert json.loads(product.stdout)["status"] == "SERVING", product.stderr
    refused = grpcurl("-cacert", str(ca), f"localhost:{place.edge_grpc[1]}", "list")
    assert refused.returncode != 0, "gRPC at the edge needs a client certificate of the mesh"


def test_the_edge_limits_token_requests_per_client_address(meshed: Platform) -> None:
    """Past its share of /oauth/token, an address gets 429 from the edge
    itself (as a google.rpc.Status), before the gateway sees the request."""
    place = meshed.cluster.sidecars.place  # type: ignore[union-attr]
    context = ssl.create_default_context(cafile=str(meshed.settings.pki_dir / "mesh" / "ca.pem"))
    share = load_mesh().edge.token_requests_per_minute_per_client
    answers = []
    # The bucket refills once a minute, at a moment of its own: a burst shorter than a minute sees at most
    # one refill, so the address is cut off within two shares (sooner if other tests spent part of it).
    for n in range(2 * share + 1):  # another made-up client each time: the gateway's per-client limit stays out
        request = urllib.request.Request(
            f"https://localhost:{place.edge_rest[1]}/oauth/token",
            data=f"grant_type=client_credentials&client_id=nobody-{n}&client_secret=x".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
                answers.append((response.status, {}))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())))
        if answers[-1][0] == 429:
            break
    assert all(code == 401 for code, _ in answers[:-1]), "unknown clients, each refused by the gateway"
    code, body = answers[-1]
    assert code == 429, f"no 429 after {len(answers)} requests from one address (share {share} a minute)"
    assert body["details"][0]["reason"] == "RATE_LIMITED", body


def _refused_upload(port: int, context: ssl.SSLContext, size: int) -> dict[str, Any]:
    """POSTs `size` bytes of body; the answer (which may come before the body is all sent) as JSON."""
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    connection.putrequest("POST", "/v1/invoices")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    try:
        for _ in range(size >> 20):
            connection.send(b" " * (1 << 20))
    except OSError:
        pass  # the edge answered and closed while the body was still coming
    response = connection.getresponse()
    answer: dict[str, Any] = {"http": response.status, **json.loads(response.read())}
    connection.close()
    return answer


def test_bmc_mesh_status_shows_each_sidecar_and_what_moved(meshed: Platform) -> None:
    assert meshed.cluster.infrastructure is not None
    env = {**os.environ, **meshed.settings.as_environment(), "COLUMNS": "250"}
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "bmc"), "mesh", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if line.count("│") > 3}
    for sidecar in ("invoice-0", "product-0", "product-1", "commission-0", "certificate-0", "gateway", "edge"):
        assert sidecar in lines, shown.stdout
    assert "spiffe://bmc.local/service/product" in lines["product-1"]
    assert "health check failures" in shown.stdout


def test_certificates_rotated_under_traffic_fail_no_call(meshed: Platform) -> None:
    """Every identity re-issued three times while registrations cross the
    mesh: the sidecars load the new certificates (SDS) and no call fails."""
    assert meshed.cluster.sidecars is not None
    spec = meshed.cluster.sidecars.spec

    def updates() -> int:
        return sum(v for k, v in _counters(meshed, "product-0").items() if k.endswith("ssl_context_update_by_sds"))

    before = updates()
    with registering(meshed, "rotation") as traffic:
        for _ in range(3):
            time.sleep(1.0)
            for identity in [*spec.services, "gateway", "edge"]:
                identities.issue(meshed.settings.pki_dir, identity, spec.identity(identity))
        count = len(traffic.registered)
        wait_until(lambda: len(traffic.registered) >= count + 10, timeout=30)
    assert traffic.failures == []
    assert updates() > before, "the product sidecar loaded new certificates"
