"""The real Envoy sidecar, rendered from the mesh spec, in front of the real
product service of the platform: only mutual TLS 1.3 from an identity allowed to call it
gets through, each caller reaches only the RPCs the spec gives it
(PERMISSION_DENIED from the sidecar otherwise, the service never seeing the
call), and every refusal moves the sidecar's counters."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.kit.clients import bearer
from services.kit.pki import DevPki
from services.kit.tokens import mint_token
from services.kit.topology import SERVICES
from services.mesh import envoy, identities
from services.mesh.access import operator
from services.mesh.render import mesh_placement, sidecar
from services.mesh.spec import load, methods
from tests.conftest import Platform, free_port_base
from tests.integration.clients import wait_until


@dataclass
class Sidecar:
    port: int
    admin: int
    pki: Path
    log: Path
    platform: Platform

    def counters(self) -> dict[str, int]:
        return envoy.counters(self.admin)

    def ssl(self, name: str) -> int:
        return self.counters().get(f"listener.127.0.0.1_{self.port}.ssl.{name}", 0)

    def credentials(self, identity: str, pki: Path | None = None) -> grpc.ChannelCredentials:
        directory = identities.directory(pki or self.pki, identity)
        return grpc.ssl_channel_credentials(
            root_certificates=(self.pki / "mesh" / "ca.pem").read_bytes(),
            private_key=(directory / "key.pem").read_bytes(),
            certificate_chain=(directory / "cert.pem").read_bytes(),
        )

    def call(self, credentials: grpc.ChannelCredentials | None, method: str = "BatchGetProducts") -> grpc.StatusCode:
        target = f"localhost:{self.port}"
        channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        token = bearer(mint_token(self.platform.settings, subject="service:invoice", roles=["service"]))
        try:
            if method == "BatchGetProducts":
                stub.BatchGetProducts(
                    product_service_pb2.BatchGetProductsRequest(names=["products/MAIZ-AMARILLO"]),
                    metadata=token, timeout=5,
                )  # fmt: skip
            else:
                stub.GetProduct(
                    product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO"), metadata=token, timeout=5
                )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined, no-any-return]
        finally:
            channel.close()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def product_sidecar(platform: Platform) -> Sidecar:
    """The platform's own sidecar of product replica 0."""
    if platform.backend != "embedded":
        pytest.skip("one backend is enough for the sidecar")
    assert platform.settings.mesh, "the platform runs behind the mesh"
    place = mesh_placement(platform.settings)
    log = platform.cluster.log_dir / "envoy-product-0.log"
    return Sidecar(place.inbound("product", 0)[1], place.admin("product", 0), platform.settings.pki_dir, log, platform)


def test_an_allowed_identity_gets_through(product_sidecar: Sidecar) -> None:
    assert product_sidecar.call(product_sidecar.credentials("invoice")) == grpc.StatusCode.OK


def test_a_caller_reaches_only_the_rpcs_the_spec_gives_it(product_sidecar: Sidecar) -> None:
    log = product_sidecar.platform.cluster.log_dir / "product.log"
    seen_before = log.read_text().count("ProductService/GetProduct")
    denied_before = product_sidecar.counters().get("http.inbound.rbac.denied", 0)
    code = product_sidecar.call(product_sidecar.credentials("invoice"), "GetProduct")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert product_sidecar.counters()["http.inbound.rbac.denied"] == denied_before + 1
    assert log.read_text().count("ProductService/GetProduct") == seen_before, "the service never saw it"


def test_a_certificate_of_the_mesh_ca_that_is_no_service_is_refused(product_sidecar: Sidecar) -> None:
    """An operator's certificate (valid, from the mesh CA, the wrong identity) opens no sidecar's inbound."""
    operator(product_sidecar.platform.settings, "mallory")
    before = product_sidecar.ssl("fail_verify_san")
    assert product_sidecar.call(product_sidecar.credentials("operator-mallory")) == grpc.StatusCode.UNAVAILABLE
    assert product_sidecar.ssl("fail_verify_san") == before + 1


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_service_refuses_an_identity_the_spec_does_not_allow(platform: Platform, service: str) -> None:
    """A service identity of the mesh calling an RPC its allow list lacks:
    PERMISSION_DENIED from the callee's sidecar, and the service never sees it."""
    if platform.backend != "embedded":
        pytest.skip("one backend is enough for the sidecars")
    spec, place = load(), mesh_placement(platform.settings)
    method = next(iter(methods(service).values()))
    caller = next(c for c in SERVICES if c != service and method.name not in spec.allowed(c, service))
    credentials = identities.client_credentials(identities.directory(platform.settings.pki_dir, caller))
    admin = place.admin(service, 0)
    denied = envoy.counters(admin).get("http.inbound.rbac.denied", 0)
    request_id = f"rbac-{uuid.uuid4().hex}"
    token = bearer(mint_token(platform.settings, subject=f"service:{caller}", roles=["service"]))
    path = f"/{method.containing_service.full_name}/{method.name}"
    with grpc.secure_channel(f"localhost:{place.inbound(service, 0)[1]}", credentials) as channel:
        call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", metadata=(*token, ("x-request-id", request_id)), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, f"{caller} → {path}"  # type: ignore[attr-defined]
    assert envoy.counters(admin)["http.inbound.rbac.denied"] == denied + 1
    sidecar_log = platform.cluster.log_dir / f"envoy-{service}-0.log"
    wait_until(lambda: request_id in sidecar_log.read_text(), timeout=15)  # the sidecar logged the refusal
    assert request_id not in platform.logs(service), "the service never saw it"


def test_a_certificate_from_another_ca_is_refused(product_sidecar: Sidecar, tmp_path: Path) -> None:
    foreign = DevPki(tmp_path / "mesh", "Another CA")
    directory = identities.directory(tmp_path, "invoice")
    directory.mkdir(parents=True)
    issued = foreign.workload("invoice", load().identity("invoice"), identities.LIFETIME)
    (directory / "cert.pem").write_bytes(issued.certificate)
    (directory / "key.pem").write_bytes(issued.private_key)
    before = product_sidecar.ssl("fail_verify_error")
    assert product_sidecar.call(product_sidecar.credentials("invoice", tmp_path)) == grpc.StatusCode.UNAVAILABLE
    assert product_sidecar.ssl("fail_verify_error") == before + 1


def test_a_client_without_a_certificate_is_refused(product_sidecar: Sidecar) -> None:
    before = product_sidecar.ssl("fail_verify_no_cert") + product_sidecar.ssl("connection_error")
    anonymous = grpc.ssl_channel_credentials(root_certificates=(product_sidecar.pki / "mesh" / "ca.pem").read_bytes())
    assert product_sidecar.call(anonymous) == grpc.StatusCode.UNAVAILABLE
    assert product_sidecar.ssl("fail_verify_no_cert") + product_sidecar.ssl("connection_error") > before


def test_a_plaintext_client_is_refused(product_sidecar: Sidecar) -> None:
    before = product_sidecar.ssl("connection_error")
    assert product_sidecar.call(None) == grpc.StatusCode.UNAVAILABLE
    assert product_sidecar.ssl("connection_error") > before


def test_a_tls_1_2_client_is_refused(product_sidecar: Sidecar) -> None:
    directory = identities.directory(product_sidecar.pki, "invoice")
    context = ssl.create_default_context(cafile=str(product_sidecar.pki / "mesh" / "ca.pem"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    context.set_alpn_protocols(["h2"])
    before = product_sidecar.ssl("connection_error")
    with socket.create_connection(("127.0.0.1", product_sidecar.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")
    assert product_sidecar.ssl("connection_error") > before


def test_certificates_reissued_apply_without_a_restart(product_sidecar: Sidecar) -> None:
    """The sidecar's own certificate re-issued: new connections see the new one."""
    spec = load()

    def served_serial() -> int:
        context = ssl.create_default_context(cafile=str(product_sidecar.pki / "mesh" / "ca.pem"))
        directory = identities.directory(product_sidecar.pki, "invoice")
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        with (
            socket.create_connection(("127.0.0.1", product_sidecar.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    before = served_serial()
    identities.issue(product_sidecar.pki, "product", spec.identity("product"))
    deadline = time.monotonic() + 10
    while served_serial() == before:
        assert time.monotonic() < deadline, "the sidecar still serves the old certificate"
        time.sleep(0.1)
    assert product_sidecar.call(product_sidecar.credentials("invoice")) == grpc.StatusCode.OK


@pytest.fixture(scope="module")
def invoice_egress(product_sidecar: Sidecar) -> Iterator[tuple[int, int]]:
    """A second sidecar of the invoice service (on ports of its own), with a
    product breaker of two requests at a time and no retries: (its outbound
    port, its admin port)."""
    spec = load()
    tight = {**spec.policy.get("product", {}), "max_requests": 2, "max_pending_requests": 1, "retry_attempts": 0}
    spec = spec.model_copy(update={"policy": {**spec.policy, "product": tight}})
    base = free_port_base()
    place = replace(
        mesh_placement(product_sidecar.platform.settings),
        bind_inbound=lambda name, replica: ("127.0.0.1", base + 1),
        outbound=lambda name, replica: base + 2,
        admin=lambda name, replica: base + 3,
    )
    config = product_sidecar.log.parent / "invoice-tight.json"
    config.write_text(json.dumps(sidecar(spec, place, "invoice", 0)))
    process = envoy.start(config, product_sidecar.log.parent / "envoy-invoice-tight.log")
    try:
        envoy.wait_ready(place.admin("invoice", 0), process)
        admin = place.admin("invoice", 0)
        deadline = time.monotonic() + 15  # both product replicas pass their first health check
        while envoy.counters(admin).get("cluster.product.membership_healthy", 0) < 2:
            assert time.monotonic() < deadline, "the product replicas never healthy behind their sidecars"
            time.sleep(0.1)
        yield place.outbound("invoice", 0), admin
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_calls_beyond_the_breaker_fail_fast_as_overloaded(
    product_sidecar: Sidecar, invoice_egress: tuple[int, int]
) -> None:
    port, admin = invoice_egress
    token = bearer(mint_token(product_sidecar.platform.settings, subject="service:invoice", roles=["service"]))
    request = product_service_pb2.BatchGetProductsRequest(names=[f"products/P{n:05d}" for n in range(1000)])
    outcomes: list[tuple[grpc.StatusCode, str]] = []
    before = overflows(envoy.counters(admin))

    def lookup() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = product_service_pb2_grpc.ProductServiceStub(channel)
            try:
                stub.BatchGetProducts(request, metadata=token, timeout=10)
                outcomes.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as exc:
                # A local reply is trailers-only: Envoy's headers arrive as trailers.
                headers = (*(exc.initial_metadata() or ()), *(exc.trailing_metadata() or ()))  # type: ignore[attr-defined]
                overloaded = dict(headers).get("x-envoy-overloaded", "")
                outcomes.append((exc.code(), overloaded))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=lookup) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    refused = [o for o in outcomes if o[0] != grpc.StatusCode.OK]
    assert refused, "40 lookups at once through a breaker of 2"
    assert {code for code, _ in refused} == {grpc.StatusCode.UNAVAILABLE}
    assert all(flag == "true" for _, flag in refused), refused
    assert any(code == grpc.StatusCode.OK for code, _ in outcomes)
    assert overflows(envoy.counters(admin)) >= before + len(refused)


def test_a_client_deadline_shorter_than_the_route_timeout_ends_as_deadline_exceeded(
    product_sidecar: Sidecar, invoice_egress: tuple[int, int]
) -> None:
    """The product route allows 2 s; a 1 ms deadline still wins, as
    DEADLINE_EXCEEDED, not as the mesh's own UNAVAILABLE."""
    port, _ = invoice_egress
    token = bearer(mint_token(product_sidecar.platform.settings, subject="service:invoice", roles=["service"]))
    names = [f"products/P{n:05d}" for n in range(1000)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        stub.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=names[:1]), metadata=token, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.BatchGetProducts(
                product_service_pb2.BatchGetProductsRequest(names=names), metadata=token, timeout=0.001
            )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]


def overflows(counters: dict[str, int]) -> int:
    """Requests the product breaker refused (active requests, or the pending queue, full)."""
    return sum(counters.get(f"cluster.product.upstream_rq_{kind}_overflow", 0) for kind in ("active", "pending"))
