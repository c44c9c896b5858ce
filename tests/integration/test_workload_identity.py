"""The `identity` container of an ECS task (services/mesh/workload_identity.py)
against moto's ACM Private CA (a fake of AWS, which cannot run here): it
installs a certificate signed by the CA, its key and the CA where the
sidecar's SDS files point, and reports healthy only while they are valid."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from moto import mock_aws

from services.mesh import workload_identity
from services.mesh.workload_identity import PrivateCa, directory_of, healthy, renew, request_for

IDENTITIES = ["spiffe://bmc.local/service/gateway", "spiffe://bmc.local/service/edge"]


@pytest.fixture
def private_ca(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("acm-pca")
        arn = client.create_certificate_authority(
            CertificateAuthorityConfiguration={
                "KeyAlgorithm": "EC_prime256v1",
                "SigningAlgorithm": "SHA256WITHECDSA",
                "Subject": {"Organization": "BMC Registry", "CommonName": "BMC mesh CA (test)"},
            },
            CertificateAuthorityType="ROOT",
        )["CertificateAuthorityArn"]
        csr = client.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
        root = client.issue_certificate(
            CertificateAuthorityArn=arn,
            Csr=csr,
            SigningAlgorithm="SHA256WITHECDSA",
            TemplateArn="arn:aws:acm-pca:::template/RootCACertificate/V1",
            Validity={"Value": 10, "Type": "YEARS"},
        )["CertificateArn"]
        pem = client.get_certificate(CertificateAuthorityArn=arn, CertificateArn=root)["Certificate"]
        client.import_certificate_authority_certificate(CertificateAuthorityArn=arn, Certificate=pem)
        yield arn, client


def test_the_request_carries_the_spiffe_id_as_its_only_san() -> None:
    key, request = request_for(IDENTITIES[0])
    csr = x509.load_pem_x509_csr(request)
    assert csr.is_signature_valid
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [IDENTITIES[0]]
    assert len(list(names)) == 1
    private = serialization.load_pem_private_key(key, password=None)
    assert private.public_key().public_numbers() == csr.public_key().public_numbers()  # type: ignore[union-attr]


def test_each_identity_is_installed_signed_by_the_ca(private_ca: tuple[str, Any], tmp_path: Path) -> None:
    arn, client = private_ca
    expires = renew(PrivateCa(arn, client=client), IDENTITIES, tmp_path, dt.timedelta(days=7))
    ends = []
    for spiffe_id in IDENTITIES:
        folder = directory_of(tmp_path, spiffe_id)
        assert folder.name == spiffe_id.rsplit("/", 1)[-1]  # where mesh/aws/*.json look
        certificate = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        ends.append(certificate.not_valid_after_utc)
        key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), password=None)
        assert certificate.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        certificate.verify_directly_issued_by(ca)  # raises unless the CA signed it
        assert (folder / "key.pem").stat().st_mode & 0o077 == 0, "the key is private to the container's user"
        sds = json.loads((folder / "identity.sds.json").read_text())
        assert sds["resources"][0]["tls_certificate"]["certificate_chain"]["filename"] == str(folder / "cert.pem")
    assert expires == min(ends), "renewal is timed by the first certificate to expire"


def test_health_needs_every_identity_valid_for_another_hour(
    private_ca: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, client = private_ca
    monkeypatch.setenv("BMC_IDENTITIES", " ".join(IDENTITIES))
    monkeypatch.setenv("BMC_IDENTITY_DIR", str(tmp_path))
    assert workload_identity.main(["--check"]) == 1, "nothing installed yet"
    renew(PrivateCa(arn, client=client), IDENTITIES[:1], tmp_path, dt.timedelta(days=7))
    assert workload_identity.main(["--check"]) == 1, "the edge's identity is still missing"
    expires = renew(PrivateCa(arn, client=client), IDENTITIES, tmp_path, dt.timedelta(days=7))
    assert workload_identity.main(["--check"]) == 0
    assert not healthy(IDENTITIES, tmp_path, expires - dt.timedelta(minutes=30)), "about to expire is unhealthy"
