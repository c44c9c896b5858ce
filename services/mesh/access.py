"""How callers outside the mesh come in: through the edge. REST over HTTPS
(TLS 1.3, the mesh CA's server certificate) for anyone with a token; gRPC
over mutual TLS for operators and internal clients, each with a
certificate of its own from the mesh CA (`spiffe://<domain>/operator/<name>`).
On this machine an operator's certificate is issued on first use and again
when it nears its end; in AWS it comes from the private CA."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from services.kit.clients import CLI
from services.kit.files import exclusive_lock
from services.kit.settings import Settings
from services.mesh import identities
from services.mesh.spec import load

_RENEW_BEFORE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class OperatorIdentity:
    directory: Path
    spiffe_id: str
    certificate: bytes
    private_key: bytes
    ca: bytes

    @property
    def grpcurl_flags(self) -> list[str]:
        d = self.directory
        return ["-cacert", str(d / "ca.pem"), "-cert", str(d / "cert.pem"), "-key", str(d / "key.pem")]


def operator(settings: Settings, name: str = CLI) -> OperatorIdentity:
    """The operator's certificate, issued (or renewed) when missing or within an hour of its end."""
    spiffe_id = f"spiffe://{load().trust_domain}/operator/{name}"
    directory = identities.directory(settings.pki_dir, f"operator-{name}")
    directory.mkdir(parents=True, exist_ok=True)
    # Issuing writes three files: readers and writers take turns, so no one pairs a new certificate with an old key.
    with exclusive_lock(directory / ".lock"):
        cert = directory / "cert.pem"
        if not cert.exists() or _ends_soon(cert.read_bytes()):
            identities.issue(settings.pki_dir, f"operator-{name}", spiffe_id)
        return OperatorIdentity(
            directory,
            spiffe_id,
            cert.read_bytes(),
            (directory / "key.pem").read_bytes(),
            (directory / "ca.pem").read_bytes(),
        )


def _ends_soon(pem: bytes) -> bool:
    end = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    return end - dt.datetime.now(dt.UTC) < _RENEW_BEFORE


def edge_grpc_target(settings: Settings) -> str:
    return f"localhost:{settings.edge_port + 1}"


def edge_url(settings: Settings) -> str:
    return f"https://localhost:{settings.edge_port}"


def ca_file(settings: Settings) -> Path:
    """The mesh CA, which signs the edge's server certificate."""
    return identities.mesh_pki(settings.pki_dir).ca_path


def edge_credentials(settings: Settings, name: str = CLI) -> grpc.ChannelCredentials:
    identity = operator(settings, name)
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca, private_key=identity.private_key, certificate_chain=identity.certificate
    )


def edge_ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file(settings)))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context
