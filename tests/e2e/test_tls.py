"""Mutual TLS (BMC_TLS=1): only clients holding a certificate from the CA get in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.cli.cluster import Cluster
from services.kit.pki import DevPki, channel_credentials
from services.kit.settings import Settings
from services.kit.topology import SERVICES
from tests.conftest import grpcurl, make_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(tmp_path_factory.mktemp("tls"), "embedded", tls=True)
    with Cluster(settings, services=["invoice", "product"]) as cluster:
        yield cluster.settings


def _check(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK


def test_client_with_ca_signed_certificate_gets_through(tls_settings: Settings) -> None:
    target = SERVICES["invoice"].target(tls_settings)
    assert _check(target, channel_credentials(tls_settings, "bmc-cli")) == grpc.StatusCode.OK


def test_client_without_certificate_is_refused(tls_settings: Settings) -> None:
    target = SERVICES["invoice"].target(tls_settings)
    ca = DevPki.from_settings(tls_settings).ca_certificate()
    assert _check(target, grpc.ssl_channel_credentials(root_certificates=ca)) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(tls_settings: Settings) -> None:
    assert _check(SERVICES["invoice"].target(tls_settings), None) == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(tls_settings: Settings, tmp_path: Path) -> None:
    rogue = DevPki(tmp_path / "rogue-pki")
    identity = rogue.identity("bmc-cli")
    ca = DevPki.from_settings(tls_settings).ca_certificate()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=identity.private_key, certificate_chain=identity.certificate
    )
    assert _check(SERVICES["product"].target(tls_settings), credentials) == grpc.StatusCode.UNAVAILABLE


def test_grpcurl_with_client_certificate_lists_services(tls_settings: Settings) -> None:
    pki = tls_settings.pki_dir
    DevPki(pki).identity("bmc-cli")
    target = SERVICES["product"].target(tls_settings)
    ok = grpcurl(
        "-cacert",
        str(pki / "ca.pem"),
        "-cert",
        str(pki / "bmc-cli.pem"),
        "-key",
        str(pki / "bmc-cli-key.pem"),
        target,
        "list",
    )
    assert ok.returncode == 0, ok.stderr
    assert "bmc.product.v1.ProductService" in ok.stdout
    refused = grpcurl("-cacert", str(pki / "ca.pem"), target, "list")
    assert refused.returncode != 0
