"""The workload identities of an ECS task's Envoys, from ACM Private CA:
the task's `identity` container (`python -m services.mesh.workload_identity`,
the services' own image).

For each SPIFFE ID it is given (`BMC_IDENTITIES`: the service's, and the
edge's in the gateway's task) it makes a key that never leaves the task, asks
the private CA to sign a request carrying the ID as its URI SAN (the CSR
passthrough template keeps it), and installs certificate, key and CA where the
bootstraps' SDS files point (`/etc/envoy/tls/<name>/`). It keeps running and
renews at two thirds of the validity, so Envoy reloads new certificates
without a restart; a failed renewal is retried while the old certificate is
still valid. `--check` is the container's health check (Envoy starts only
once every identity is installed and valid for another hour).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.kit.pki import subject
from services.mesh.identities import install

log = structlog.get_logger("bmc.identity")

# Keeps the request's extensions (the URI SAN) in the issued certificate.
CSR_PASSTHROUGH = "arn:aws:acm-pca:::template/EndEntityCertificate_CSRPassthrough/V1"
MARGIN = dt.timedelta(hours=1)


def request_for(spiffe_id: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key (PEM) and a signing request for `spiffe_id` as its only SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = spiffe_id.rsplit("/", 1)[-1]
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject(name))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_key, request.public_bytes(serialization.Encoding.PEM)


class PrivateCa:
    """One ACM Private CA, through boto3 (the task role may issue with the passthrough template only)."""

    def __init__(self, arn: str, signing_algorithm: str = "SHA256WITHECDSA", client: Any = None) -> None:
        import boto3

        self.arn, self.signing_algorithm = arn, signing_algorithm
        self._client = client or boto3.client("acm-pca")

    def issue(self, request: bytes, validity: dt.timedelta) -> tuple[bytes, bytes]:
        """The certificate with its chain, and the CA certificate to trust."""
        issued = self._client.issue_certificate(
            CertificateAuthorityArn=self.arn,
            Csr=request,
            SigningAlgorithm=self.signing_algorithm,
            TemplateArn=CSR_PASSTHROUGH,
            Validity={"Value": max(1, validity.days), "Type": "DAYS"},
            IdempotencyToken=uuid.uuid4().hex[:36],
        )
        arn = issued["CertificateArn"]
        self._client.get_waiter("certificate_issued").wait(
            CertificateAuthorityArn=self.arn, CertificateArn=arn, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        got = self._client.get_certificate(CertificateAuthorityArn=self.arn, CertificateArn=arn)
        leaf = got["Certificate"].strip() + "\n" + (got.get("CertificateChain") or "").strip()
        ca = self._client.get_certificate_authority_certificate(CertificateAuthorityArn=self.arn)
        trusted = (ca.get("CertificateChain") or "").strip() + "\n" + ca["Certificate"].strip()
        return leaf.strip().encode() + b"\n", trusted.strip().encode() + b"\n"


def directory_of(root: Path, spiffe_id: str) -> Path:
    """Where the bootstraps look for this identity (render.aws_placement: /etc/envoy/tls/<name>)."""
    return root / spiffe_id.rsplit("/", 1)[-1]


def renew(ca: PrivateCa, identities: list[str], root: Path, validity: dt.timedelta) -> dt.datetime:
    """Issues and installs every identity; when the first of them expires."""
    expiries = []
    for spiffe_id in identities:
        key, request = request_for(spiffe_id)
        certificate, trusted = ca.issue(request, validity)
        install(directory_of(root, spiffe_id), certificate, key, trusted)
        expiries.append(x509.load_pem_x509_certificate(certificate).not_valid_after_utc)
        log.info("identity installed", identity=spiffe_id, not_after=expiries[-1].isoformat())
    return min(expiries)


def healthy(identities: list[str], root: Path, now: dt.datetime) -> bool:
    """Every identity installed and valid for at least another `MARGIN`."""
    for spiffe_id in identities:
        path = directory_of(root, spiffe_id) / "cert.pem"
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return False
        if certificate.not_valid_after_utc - now < MARGIN:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 0 when every identity is installed and valid")
    parser.add_argument("--once", action="store_true", help="issue once and exit (no renewal loop)")
    args = parser.parse_args(argv)
    identities = os.environ.get("BMC_IDENTITIES", "").split()
    root = Path(os.environ.get("BMC_IDENTITY_DIR", "/etc/envoy/tls"))
    if not identities:
        print("BMC_IDENTITIES names no SPIFFE ID", file=sys.stderr)
        return 2
    if args.check:
        return 0 if healthy(identities, root, dt.datetime.now(dt.UTC)) else 1
    ca = PrivateCa(os.environ["BMC_PCA_ARN"], os.environ.get("BMC_PCA_SIGNING_ALGORITHM", "SHA256WITHECDSA"))
    validity = dt.timedelta(days=int(os.environ.get("BMC_IDENTITY_VALIDITY_DAYS", "7")))
    expires = renew(ca, identities, root, validity)
    while not args.once:
        now = dt.datetime.now(dt.UTC)
        time.sleep(max(60.0, ((expires - now) * 2 / 3).total_seconds()))
        try:
            expires = renew(ca, identities, root, validity)
        except Exception as exc:  # the old certificates stay; try again soon
            log.warning("renewal failed", error=str(exc))
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
