"""The development PKI for mutual TLS: a CA and one certificate per service
and client, generated on first run under the data directory.

In AWS the Envoy sidecars terminate mTLS with certificates from the
platform's CA instead; this is only for running the services directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.kit.files import exclusive_lock, write_private
from services.kit.settings import Settings

CA_NAME = "BMC Registry development CA"
SIGNING_CA_NAME = "BMC Registry development document-signing CA"
VALIDITY = dt.timedelta(days=825)
# Identities the mTLS CA issues client certificates to, besides the services.
CLIENTS = ("gateway", "bmc-cli")


@dataclass(frozen=True)
class Identity:
    """A certificate chain and its key, PEM-encoded."""

    certificate: bytes
    private_key: bytes


def subject(common_name: str) -> x509.Name:
    """The platform's certificate subject: its organisation and the holder's name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BMC Registry"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class DevPki:
    """Files: ca.pem, ca-key.pem, <name>.pem, <name>-key.pem.

    Transport identities (services, the gateway, clients) and the document
    signer have CAs of their own (`signing()`): a certificate made to sign
    PDFs is never one a service accepts from a TLS client."""

    def __init__(self, directory: Path, ca_name: str = CA_NAME) -> None:
        self.directory = directory
        self.ca_name = ca_name

    @classmethod
    def from_settings(cls, settings: Settings) -> DevPki:
        return cls(settings.pki_dir)

    @classmethod
    def signing(cls, settings: Settings) -> DevPki:
        """The CA of the development document-signing certificate."""
        return cls(settings.pki_dir / "signing", SIGNING_CA_NAME)

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    def ca_certificate(self) -> bytes:
        self._ensure_ca()
        return self.ca_path.read_bytes()

    def identity(self, name: str, document_signer: str = "") -> Identity:
        """The certificate of `name` (a service or a client), issued when missing.
        Service certificates are valid for `name`, `localhost` and loopback;
        with `document_signer` (an organisation's name) it is a certificate
        for signing documents (PDF certificates) instead."""
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        with exclusive_lock(self.directory / ".lock"):
            self._ensure_ca_locked()
            if not cert_path.exists() or not key_path.exists():
                self._issue(name, cert_path, key_path, document_signer)
            return Identity(cert_path.read_bytes(), key_path.read_bytes())

    def workload(self, name: str, uri: str, validity: dt.timedelta) -> Identity:
        """A fresh short-lived certificate for a workload identity (`uri`, a
        SPIFFE ID, as its only SAN besides `name`), for TLS server and client
        use; issued anew on every call (rotation)."""
        with exclusive_lock(self.directory / ".lock"):
            self._ensure_ca_locked()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(uri), x509.DNSName(name), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(_load_key(self.directory / "ca-key.pem"), hashes.SHA256())
        )
        return Identity(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def _ensure_ca(self) -> None:
        with exclusive_lock(self.directory / ".lock"):
            self._ensure_ca_locked()

    def _ensure_ca_locked(self) -> None:
        key_path = self.directory / "ca-key.pem"
        if self.ca_path.exists() and key_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = subject(self.ca_name)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 4)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _pem_key(key))
        self.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, name: str, cert_path: Path, key_path: Path, document_signer: str = "") -> None:
        ca_key = _load_key(self.directory / "ca-key.pem")
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [
            x509.DNSName(name),
            x509.DNSName(f"{name}.bmc.local"),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        holder = subject(name)
        if document_signer:
            holder = x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "CO"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, document_signer),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{document_signer} (development signing key)"),
                ]
            )
        cert = (
            x509.CertificateBuilder()
            .subject_name(holder)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if document_signer:
            cert = cert.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
        else:
            cert = cert.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        signed = cert.sign(ca_key, hashes.SHA256())
        write_private(key_path, _pem_key(key))
        cert_path.write_bytes(signed.public_bytes(serialization.Encoding.PEM))


def peer_problem(pem: bytes, known: frozenset[str]) -> str:
    """Why a TLS client's certificate is not one of a known identity made
    for client authentication; empty when it is."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "the certificate is not made for TLS client authentication"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "the certificate is not made for TLS client authentication"
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not any(str(name) in known for name in names):
        return f"{', '.join(map(str, names)) or 'an unnamed certificate'} is not a known identity"
    return ""


def server_ssl_context(settings: Settings, name: str) -> ssl.SSLContext:
    """HTTPS for `name` (the REST edge): TLS 1.3 only, its dev certificate."""
    pki = DevPki.from_settings(settings)
    pki.identity(name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(pki.directory / f"{name}.pem", pki.directory / f"{name}-key.pem")
    return context


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """An HTTPS client that trusts the dev CA (for the REST edge in TLS mode)."""
    return ssl.create_default_context(cafile=DevPki.from_settings(settings).ca_path)


def server_credentials(settings: Settings, service: str) -> grpc.ServerCredentials:
    """TLS that requires a client certificate signed by the CA."""
    pki = DevPki.from_settings(settings)
    identity = pki.identity(service)
    return grpc.ssl_server_credentials(
        [(identity.private_key, identity.certificate)],
        root_certificates=pki.ca_certificate(),
        require_client_auth=True,
    )


def channel_credentials(settings: Settings, client: str) -> grpc.ChannelCredentials:
    """TLS that presents `client`'s certificate and trusts only the CA."""
    pki = DevPki.from_settings(settings)
    identity = pki.identity(client)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_certificate(),
        private_key=identity.private_key,
        certificate_chain=identity.certificate,
    )
