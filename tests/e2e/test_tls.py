"""Mutual TLS (BMC_TLS=1): only clients holding a client certificate of a
known identity from the CA get in; the REST edge speaks only HTTPS."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.cli.cluster import Cluster, gateway_url
from services.kit.pki import DevPki, Identity, channel_credentials, client_ssl_context
from services.kit.settings import Settings
from services.kit.topology import SERVICES
from tests.conftest import grpcurl, make_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(tmp_path_factory.mktemp("tls"), "embedded", tls=True, mesh=False)
    with Cluster(settings, services=["invoice", "product"], gateway=True) as cluster:
        yield cluster.settings


def _credentials(settings: Settings, identity: Identity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=DevPki.from_settings(settings).ca_certificate(),
        private_key=identity.private_key,
        certificate_chain=identity.certificate,
    )


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


def test_the_document_signing_certificate_is_no_client_certificate(tls_settings: Settings) -> None:
    signer = DevPki.signing(tls_settings).identity("document-signer", "Bolsa Mercantil de Colombia S.A.")
    target = SERVICES["invoice"].target(tls_settings)
    assert _check(target, _credentials(tls_settings, signer)) == grpc.StatusCode.UNAVAILABLE


def test_only_client_certificates_of_known_identities_are_accepted(tls_settings: Settings) -> None:
    """Certificates from the right CA, refused all the same: one made to sign
    documents (as the signer was issued before it had a CA of its own), and
    a client certificate of a name the platform does not know."""
    pki = DevPki.from_settings(tls_settings)
    signer = pki.identity("old-document-signer", "Bolsa Mercantil de Colombia S.A.")
    stranger = pki.identity("intruder")
    target = SERVICES["product"].target(tls_settings)
    assert _check(target, _credentials(tls_settings, signer)) == grpc.StatusCode.PERMISSION_DENIED
    assert _check(target, _credentials(tls_settings, stranger)) == grpc.StatusCode.PERMISSION_DENIED


def test_the_rest_edge_serves_only_https_at_tls_1_3(tls_settings: Settings) -> None:
    url = gateway_url(tls_settings)
    assert url.startswith("https://")
    context = client_ssl_context(tls_settings)
    with urllib.request.urlopen(url + "/healthz", context=context, timeout=5) as response:  # noqa: S310
        assert response.status == 200
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() == "TLSv1.3"
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(url.replace("https://", "http://") + "/healthz", timeout=5)  # noqa: S310
    old = ssl.create_default_context(cafile=str(DevPki.from_settings(tls_settings).ca_path))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", context=old, timeout=5)  # noqa: S310


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
