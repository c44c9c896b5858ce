"""The certificate service with the whole platform: certificates follow
commissions through the streams, once; issue, re-issue, revoke, download
and public verification; tenant isolation; a damaged stored file."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
import redis

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2, certificate_service_pb2_grpc
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.certificate.debris import sweep
from services.certificate.main import DEFINITION as CERTIFICATE
from services.certificate.store import LATEST_OF_SUBJECT, CertificateStore
from services.dian import calendar
from services.kit.database import open_database
from services.kit.envelopes import Event
from services.kit.events import stream_name
from services.kit.objects import LocalObjectStore
from services.kit.settings import Settings
from tests.conftest import Platform
from tests.integration.clients import Client, wait_until
from tests.integration.database import plan
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry
from tests.integration.product_helpers import reason
from tests.unit.test_certificate_document import text_of


class Certificates(Client):
    def __init__(self, settings: Settings, role: str = "operator", tenant: str = "") -> None:
        super().__init__(settings, "certificate", certificate_service_pb2_grpc.CertificateServiceStub, role, tenant)

    def of(self, invoice_name: str, timeout: float = 30) -> list[certificate_pb2.Certificate]:
        """The certificates of an invoice, once there is one."""
        deadline = time.monotonic() + timeout
        while True:
            page = self.ListCertificates(certificate_service_pb2.ListCertificatesRequest(invoice=invoice_name))
            if page.certificates:
                return list(page.certificates)
            assert time.monotonic() < deadline, f"no certificate for {invoice_name} after {timeout}s"
            time.sleep(0.2)

    def download(self, name: str) -> bytes:
        chunks = self.DownloadCertificate(certificate_service_pb2.DownloadCertificateRequest(name=name))
        return b"".join(chunk.data for chunk in chunks)

    def verify(self, **by: str) -> certificate_service_pb2.VerifyCertificateResponse:
        response: certificate_service_pb2.VerifyCertificateResponse = self.VerifyCertificate(
            certificate_service_pb2.VerifyCertificateRequest(**by)
        )
        return response


def _wait(condition: Callable[[], object], timeout: float = 30.0) -> None:
    wait_until(condition, timeout)


@pytest.fixture(scope="module")
def certified(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def _tenant() -> str:
    return f"k{uuid.uuid4().hex[:10]}"


def test_a_registered_invoice_is_certified_once_its_commission_is_charged(certified: Platform) -> None:
    tenant = _tenant()
    with registry(certified.settings, tenant=tenant) as reg, Certificates(certified.settings) as cert:
        registered = reg.register(invoice(quantity="10", price="1250000"))
        (issued,) = cert.of(registered.name)
        _wait(
            lambda: (
                reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name)).state
                == invoice_pb2.INVOICE_STATE_CERTIFIED
            )
        )
        final = reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name))
        pdf = cert.download(issued.name)
        by_code = cert.verify(code=issued.verification_code.lower().replace("-", ""))
    assert final.certificate == issued.name
    assert (issued.state, issued.broker, issued.invoice) == (
        certificate_pb2.CERTIFICATE_STATE_VALID,
        f"brokers/{tenant}",
        registered.name,
    )
    assert hashlib.sha256(pdf).hexdigest() == issued.sha256
    assert len(pdf) == issued.size_bytes
    text = " ".join(text_of(pdf).split())
    for expected in (
        registered.number,
        registered.registration_number,
        "860034313-7",
        "$ 13.125.000,00",
        "$ 31.163,00",
    ):
        assert expected in text, expected
    assert (by_code.state, by_code.facts.invoice_number, by_code.facts.sha256) == (
        certificate_pb2.CERTIFICATE_STATE_VALID,
        registered.number,
        issued.sha256,
    )
    assert not by_code.unknown


def test_redelivered_commission_events_never_make_a_second_certificate(certified: Platform) -> None:
    assert certified.cluster.infrastructure is not None
    client = redis.Redis.from_url(certified.cluster.infrastructure.redis_url)
    stream = stream_name(certified.settings.redis_prefix, "commission")
    with registry(certified.settings, tenant=_tenant()) as reg, Certificates(certified.settings) as cert:
        registered = reg.register(invoice())
        (first,) = cert.of(registered.name)
        original = next(
            Event.from_fields(fields)
            for _, fields in client.xrange(stream)
            if Event.from_fields(fields).data.get("invoice") == registered.name
        )
        client.xadd(stream, original.fields())  # the same event again
        again = Event(str(uuid.uuid4()), original.type, original.stream_id, 1, 0, original.tenant, "", original.data)
        client.xadd(stream, again.fields())  # the same fact under a new event id
        time.sleep(3)
        after = cert.of(registered.name)
    assert [c.name for c in after] == [first.name]


def test_reissue_supersedes_and_revocation_is_public(certified: Platform) -> None:
    with registry(certified.settings, tenant=_tenant()) as reg, Certificates(certified.settings) as cert:
        registered = reg.register(invoice())
        (first,) = cert.of(registered.name)
        same = cert.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(invoice=registered.name))
        second = cert.IssueCertificate(
            certificate_service_pb2.IssueCertificateRequest(invoice=registered.name, reissue=True)
        )
        old = cert.verify(code=first.verification_code)
        revoked = cert.RevokeCertificate(
            certificate_service_pb2.RevokeCertificateRequest(name=second.name, reason="issued in error")
        )
    with Certificates(certified.settings, "public") as anyone:
        public = anyone.verify(sha256=second.sha256)
        unknown = anyone.verify(code="0000-0000-0000")
    assert same.name == first.name, "issuing again returns the valid certificate"
    assert second.name != first.name
    assert second.number != first.number
    assert (old.state, old.superseded_by_number) == (certificate_pb2.CERTIFICATE_STATE_SUPERSEDED, second.number)
    assert revoked.state == certificate_pb2.CERTIFICATE_STATE_REVOKED
    assert (public.state, public.revoke_reason) == (certificate_pb2.CERTIFICATE_STATE_REVOKED, "issued in error")
    assert unknown.unknown


def test_a_damaged_file_is_never_handed_out_as_valid(certified: Platform) -> None:
    with registry(certified.settings, tenant=_tenant()) as reg, Certificates(certified.settings) as cert:
        registered = reg.register(invoice())
        (issued,) = cert.of(registered.name)
        pdf = bytearray(cert.download(issued.name))
        pdf[len(pdf) // 2] ^= 0x01
        flipped = cert.verify(sha256=hashlib.sha256(pdf).hexdigest())
        stored = certified.settings.data_dir / "objects" / issued.sha256[:2] / issued.sha256[2:4] / issued.sha256
        stored.write_bytes(bytes(pdf))
        with pytest.raises(grpc.RpcError) as damaged:
            cert.download(issued.name)
    assert flipped.unknown
    assert (damaged.value.code(), reason(damaged.value)) == (grpc.StatusCode.DATA_LOSS, "CERTIFICATE_FILE_CORRUPT")


def test_brokers_reach_only_their_own_certificates(certified: Platform) -> None:
    owner, other = _tenant(), _tenant()
    with registry(certified.settings, tenant=owner) as reg, Certificates(certified.settings) as operator:
        registered = reg.register(invoice())
        (issued,) = operator.of(registered.name)
    with Certificates(certified.settings, "broker", other) as stranger:
        errors = []
        for call in (
            lambda: stranger.GetCertificate(certificate_service_pb2.GetCertificateRequest(name=issued.name)),
            lambda: stranger.download(issued.name),
            lambda: stranger.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(invoice=registered.name)),
            lambda: stranger.RevokeCertificate(
                certificate_service_pb2.RevokeCertificateRequest(name=issued.name, reason="not mine")
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            errors.append(caught.value.code())
        listed = stranger.ListCertificates(certificate_service_pb2.ListCertificatesRequest())
        public = stranger.verify(code=issued.verification_code)
    with Certificates(certified.settings, "broker", owner) as own:
        mine = own.GetCertificate(certificate_service_pb2.GetCertificateRequest(name=issued.name))
    assert errors == [grpc.StatusCode.NOT_FOUND] * 3 + [grpc.StatusCode.PERMISSION_DENIED]
    assert list(listed.certificates) == []
    assert mine.name == issued.name
    assert public.facts.invoice_number == registered.number, "the public check says what is certified"
    assert not public.facts.HasField("issue_time") or public.facts.number == issued.number


def test_a_periodic_certificate_lists_a_buyers_operations_of_the_month(certified: Platform) -> None:
    tenant = _tenant()
    today = calendar.today()
    with registry(certified.settings, tenant=tenant) as reg, Certificates(certified.settings) as cert:
        kept = [reg.register(invoice(price=str(1_000_000 * (n + 1)))) for n in range(2)]
        annulled = reg.register(invoice())
        reg.AnnulInvoice(invoice_service_pb2.AnnulInvoiceRequest(name=annulled.name, reason="duplicated"))
        periodic = certificate_service_pb2.PeriodicSubject(
            buyer_id="860034313", year=today.year, month=today.month, broker=f"brokers/{tenant}"
        )
        issued = cert.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(periodic=periodic))
        again = cert.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(periodic=periodic))
        text = " ".join(text_of(cert.download(issued.name)).split())
        empty = certificate_service_pb2.PeriodicSubject(
            buyer_id="860034313", year=2001, month=1, broker=f"brokers/{tenant}"
        )
        with pytest.raises(grpc.RpcError) as nothing:
            cert.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(periodic=empty))
    with Certificates(certified.settings, "broker", _tenant()) as stranger, pytest.raises(grpc.RpcError) as denied:
        stranger.IssueCertificate(certificate_service_pb2.IssueCertificateRequest(periodic=periodic))
    assert again.name == issued.name
    assert (issued.kind, issued.period.year, issued.period.month, issued.broker) == (
        certificate_pb2.CERTIFICATE_KIND_PERIODIC,
        today.year,
        today.month,
        f"brokers/{tenant}",
    )
    assert "CERTIFICADO DE OPERACIONES REGISTRADAS" in text
    assert all(i.number in text for i in kept)
    assert annulled.number not in text, "annulled invoices are not certified"
    assert f"Operaciones {len(kept)}" in text
    assert (nothing.value.code(), reason(nothing.value)) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_OPERATIONS")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_latest_certificate_of_a_subject_is_found_by_index(certified: Platform) -> None:
    """Answering a redelivered event must not read every certificate ever issued."""
    explained = plan(certified.cluster, "certificate", LATEST_OF_SUBJECT, "invoices/x")
    assert "certificates_subject" in explained
    assert "Seq Scan on certificates" not in explained


def test_files_left_without_a_record_are_swept_and_issued_ones_kept(certified: Platform) -> None:
    """A crash between storing a certificate's PDF and recording it leaves a
    file no certificate refers to: swept once older than any issue in
    flight; a recent one (an issue in flight) and every issued one stay."""
    assert certified.cluster.infrastructure is not None
    with registry(certified.settings, tenant=_tenant()) as reg, Certificates(certified.settings) as cert:
        (issued,) = cert.of(reg.register(invoice()).name)
    objects = LocalObjectStore(certified.settings.data_dir / "objects")
    kept, orphan = issued.sha256, objects.put(b"%PDF orphan " + uuid.uuid4().bytes)
    in_flight = objects.put(b"%PDF in flight " + uuid.uuid4().bytes)
    # Written "now" and two hours ago by the clock the sweeper reads (the file
    # system's own stamps do not follow a faked clock, as in `make test-future`).
    now = time.time()
    os.utime(objects.path(in_flight), (now, now))
    for digest in (kept, orphan):
        os.utime(objects.path(digest), (now - 7200, now - 7200))

    async def run() -> int:
        assert certified.cluster.infrastructure is not None
        database = await open_database(
            certified.settings, certified.cluster.infrastructure.database_url, "certificate", CERTIFICATE.migrations
        )
        try:
            return await sweep(objects, CertificateStore(database), dt.timedelta(hours=1))
        finally:
            await database.close()

    removed = asyncio.run(run())
    assert removed >= 1
    assert not objects.path(orphan).exists()
    assert objects.path(kept).exists()
    assert objects.path(in_flight).exists()
