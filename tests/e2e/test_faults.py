"""Fault injection on real processes: with registrations running throughout,
one component at a time is killed, frozen or emptied, then healed. Each
test then reconciles its broker's registrations, commissions and
certificates: counts equal, none twice, each invoice's history with each
step once, the settlement equal to the sum of the commissions, and the
event chain intact. Recovery times are printed (`-s` shows them)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import redis

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2, certificate_service_pb2_grpc
from bmc.commission.v1 import commission_service_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.cli.cluster import Cluster
from services.cli.commissions import ensure_uvt
from services.commission.domain import period_of
from services.dian import calendar
from services.kit.envelopes import Event
from services.kit.events import stream_name
from tests.conftest import Platform, make_settings
from tests.integration.clients import Client, wait_until
from tests.integration.database import rows
from tests.integration.faults import frozen, server_pids, service_pids
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry
from tests.integration.test_commission import Commissions

BATCH = 5
# Seconds between batches: traffic that never stops, at a rate the consumers
# catch up with in seconds after a restart (at 0.05 s, a certificate service's
# restart left some 1,700 invoices to certify).
PACE = 0.15
BMC = str(Path(sys.executable).parent / "bmc")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own (its parts get killed), tuned to recover fast."""
    settings = make_settings(
        tmp_path_factory.mktemp("faults"),
        "embedded",
        catchup_grace_seconds=1.0,
        catchup_probe_seconds=1.0,
        dead_letter_attempts=3,
        dead_letter_after_seconds=2.0,
    )
    with Cluster(settings) as cluster:
        ensure_uvt(cluster.settings, calendar.today().year)
        load_sample_catalog(cluster.settings)
        yield Platform("embedded", cluster.settings, cluster)


@dataclass
class Traffic:
    """Registers invoices for one broker in batches from a thread until
    stopped; a batch that fails is sent again with the same request ids
    (idempotent) until every invoice of it is registered."""

    platform: Platform
    tenant: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}")
    names: dict[str, str] = field(default_factory=dict)  # request id -> invoice name
    successes: list[float] = field(default_factory=list)  # when each batch call succeeded
    failures: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=90)
        assert not self._thread.is_alive(), "the last batch never got registered"

    def _run(self) -> None:
        with registry(self.platform.settings, "broker", self.tenant) as client:
            while not self._stop.is_set():
                requests = [
                    invoice_service_pb2.RegisterInvoiceRequest(invoice=invoice(), request_id=uuid.uuid4().hex)
                    for _ in range(BATCH)
                ]
                self._register(client, requests)
                time.sleep(PACE)

    def _register(self, client: Client, requests: list[invoice_service_pb2.RegisterInvoiceRequest]) -> None:
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline:
            try:
                response = client.BatchRegisterInvoices(
                    invoice_service_pb2.BatchRegisterInvoicesRequest(requests=requests), timeout=5
                )
            except grpc.RpcError as exc:
                self.failures[exc.code().name] += 1  # type: ignore[attr-defined]
                time.sleep(0.2)
                continue
            self.successes.append(time.monotonic())
            for result in response.results:
                if result.HasField("invoice"):
                    request_id = requests[result.index].request_id
                    assert self.names.setdefault(request_id, result.invoice.name) == result.invoice.name
                else:
                    self.failures[result.error.message[:60]] += 1
            if all(r.request_id in self.names for r in requests):
                return
            time.sleep(0.2)

    def first_success_after(self, instant: float, timeout: float = 30) -> float:
        """Seconds from `instant` to the first batch registered after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in list(self.successes) if t > instant]
            if later:
                return min(later) - instant
            time.sleep(0.05)
        raise AssertionError(f"no registration succeeded within {timeout}s of the recovery")

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.names) < count:
            assert time.monotonic() < deadline, f"only {len(self.names)} registered, {dict(self.failures)}"
            time.sleep(0.05)


def _all(method: object, request: object, field_name: str) -> list[object]:
    items: list[object] = []
    while True:
        page = method(request)  # type: ignore[operator]
        items += list(getattr(page, field_name))
        if not page.next_page_token:
            return items
        request.page_token = page.next_page_token  # type: ignore[attr-defined]


def reconcile(platform: Platform, traffic: Traffic, timeout: float = 120) -> float:
    """Registrations, commissions and certificates agree, each once; when
    (monotonic) every invoice was seen certified."""
    settings, broker = platform.settings, f"brokers/{traffic.tenant}"
    names = set(traffic.names.values())
    assert len(names) == len(traffic.names), "two requests got one invoice"
    with (
        registry(settings, "broker", traffic.tenant) as own,
        registry(settings, "operator") as operator,
        Commissions(settings) as commissions,
        Client(settings, "certificate", certificate_service_pb2_grpc.CertificateServiceStub, "operator") as certs,
    ):
        deadline = time.monotonic() + timeout
        while True:
            invoices = _all(own.ListInvoices, invoice_service_pb2.ListInvoicesRequest(page_size=1000), "invoices")
            states = Counter(invoice_pb2.InvoiceState.Name(i.state) for i in invoices)  # type: ignore[attr-defined]
            if states["INVOICE_STATE_CERTIFIED"] == len(names):
                certified = time.monotonic()
                break
            assert time.monotonic() < deadline, f"not all certified: {dict(states)} of {len(names)}"
            time.sleep(0.5)
        assert {i.name for i in invoices} == names, "registered exactly what was acknowledged"  # type: ignore[attr-defined]

        charged = _all(
            commissions.ListCommissions,
            commission_service_pb2.ListCommissionsRequest(page_size=1000, broker=broker),
            "commissions",
        )
        assert Counter(c.invoice for c in charged) == Counter(names), "one commission per invoice"  # type: ignore[attr-defined]
        issued = _all(
            certs.ListCertificates,
            certificate_service_pb2.ListCertificatesRequest(page_size=1000, broker=broker),
            "certificates",
        )
        valid = [c for c in issued if c.state == certificate_pb2.CERTIFICATE_STATE_VALID]  # type: ignore[attr-defined]
        assert Counter(c.invoice for c in valid) == Counter(names), "one certificate per invoice"  # type: ignore[attr-defined]
        assert len(issued) == len(valid), "no certificate superseded or issued twice"

        history = _all(
            own.ListInvoiceEvents,
            invoice_service_pb2.ListInvoiceEventsRequest(parent="invoices/-", page_size=1000),
            "events",
        )
        steps = Counter((e.invoice, e.type) for e in history)  # type: ignore[attr-defined]
        for name in names:
            for step in ("InvoiceRegistered", "CommissionCalculated", "InvoiceCertified"):
                assert steps[(name, step)] == 1, f"{name}: {step} recorded {steps[(name, step)]} times"

        period = period_of(calendar.today())
        settled = [c for c in charged if _period_of(c.registration_date) == period]  # type: ignore[attr-defined]
        if settled:
            settlement = commissions.settle(period, broker)
            assert settlement.total.invoice_count == len(settled)
            assert Decimal(settlement.total.commission) == sum(
                (Decimal(c.breakdown.commission) for c in settled),  # type: ignore[attr-defined]
                Decimal(0),
            )
        chain = operator.VerifyEventChain(invoice_service_pb2.VerifyEventChainRequest(), timeout=120)
        assert chain.intact, chain.detail
    return certified


def _period_of(date: object) -> str:
    return period_of(dt.date(date.year, date.month, date.day))  # type: ignore[attr-defined]


def _report(fault: str, **figures: object) -> None:
    print(f"\nFAULT {fault}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


def _redis_url(platform: Platform) -> str:
    assert platform.cluster.infrastructure is not None
    return platform.cluster.infrastructure.redis_url


def _kill_and_restart(cluster: Cluster, service: str) -> float:
    cluster.kill(service)
    time.sleep(2)
    cluster.restart(service)
    return time.monotonic()


@pytest.mark.parametrize("service", ["commission", "certificate", "invoice"])
def test_kill_9_of_a_service_loses_and_duplicates_nothing(faulty: Platform, service: str) -> None:
    """The consumers killed between reads, the invoice service mid-batch."""
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        healed = _kill_and_restart(faulty.cluster, service)
        recovery = traffic.first_success_after(healed) if service == "invoice" else 0.0
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    _report(f"kill -9 {service}", invoices=len(traffic.names), first_success_s=f"{recovery:.2f}")


def test_redis_killed_and_restarted_loses_and_duplicates_nothing(faulty: Platform) -> None:
    assert faulty.cluster.infrastructure is not None
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        os.kill(server_pids(faulty.cluster, "redis")[0], signal.SIGKILL)
        time.sleep(1)
        assert "redis" in faulty.cluster.supervise()
        healed = time.monotonic()
        recovery = traffic.first_success_after(healed)
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    _report("kill -9 redis", invoices=len(traffic.names), first_success_s=f"{recovery:.2f}")


def test_redis_losing_its_data_loses_nothing(faulty: Platform) -> None:
    """As an ElastiCache failover may: the streams and groups vanish with
    events on them no consumer has read; the consumers catch up from the
    producers' logs."""
    client = redis.Redis.from_url(_redis_url(faulty))
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        with frozen(service_pids(faulty.cluster, "commission")):  # a backlog builds up unread
            before = len(traffic.names)
            traffic.wait_for(before + 40 * BATCH)
            backlog = len(traffic.names) - before
            client.flushall()
            lost = time.monotonic()
    certified = reconcile(faulty, traffic)
    _report("redis lost its data", invoices=len(traffic.names), unread_registrations_lost=backlog,
            all_certified_after_s=f"{certified - lost:.1f}")  # fmt: skip


@pytest.mark.parametrize("server", ["redis", "postgresql"])
def test_a_frozen_server_loses_and_duplicates_nothing(faulty: Platform, server: str) -> None:
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        with frozen(server_pids(faulty.cluster, server)):
            time.sleep(5)
        healed = time.monotonic()
        recovery = traffic.first_success_after(healed)
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    _report(f"{server} frozen 5 s", invoices=len(traffic.names), first_success_s=f"{recovery:.2f}")


def test_a_poison_event_is_set_aside_and_holds_nothing_back(faulty: Platform) -> None:
    """An entry that is no event, and an event the commission service cannot
    apply, land among the registrations: both are set aside as dead letters,
    everything else is applied, and operators see them with the CLI."""
    assert faulty.cluster.infrastructure is not None
    client = redis.Redis.from_url(_redis_url(faulty))
    stream = stream_name(faulty.settings.redis_prefix, "invoice")
    poison = Event(str(uuid.uuid4()), "InvoiceRegistered", "poison", 1, 0, "acme", "", {"document": "not a document"})
    with Traffic(faulty) as traffic:
        traffic.wait_for(2 * BATCH)
        client.xadd(stream, {"type": b"InvoiceRegistered", "event": b"{not json"})
        client.xadd(stream, poison.fields())  # type: ignore[arg-type]
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    env = {**os.environ, **faulty.settings.as_environment(), "COLUMNS": "250"}
    env.update(BMC_DATABASE_URL=faulty.cluster.infrastructure.database_url, BMC_REDIS_URL=_redis_url(faulty))
    deadline = time.monotonic() + 30
    while True:
        listed = subprocess.run(
            [BMC, "events", "dead-letters", "--service", "commission"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        if poison.event_id in listed.stdout.replace("\n", "") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "(not an event)" in listed.stdout
    with Commissions(faulty.settings) as ops:
        letters = ops.ListDeadLetters(commission_service_pb2.ListDeadLettersRequest()).dead_letters
        (letter,) = [x for x in letters if x.event.event_id == poison.event_id]
        with pytest.raises(grpc.RpcError) as again:
            ops.RedriveDeadLetter(commission_service_pb2.RedriveDeadLetterRequest(name=letter.name))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    redrive = subprocess.run(
        [BMC, "events", "redrive", letter.name],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert redrive.returncode == 1, redrive.stdout
    assert "failed" in redrive.stdout


def test_reconciliation_repairs_what_the_logs_no_longer_hold(faulty: Platform) -> None:
    """The certificate service is down while commissions are charged, and
    the commission service's log is pruned before it returns (as after an
    outage longer than the retention): no catch-up can bring the events
    back. The reconciliation finds the registrations behind and asks for
    their certificates; each step is then recorded once."""
    traffic = Traffic(faulty)
    requests = [
        invoice_service_pb2.RegisterInvoiceRequest(invoice=invoice(), request_id=uuid.uuid4().hex) for _ in range(10)
    ]
    commissioned = invoice_service_pb2.ListInvoicesRequest(state=invoice_pb2.INVOICE_STATE_COMMISSIONED)
    with (
        registry(faulty.settings, "broker", traffic.tenant) as client,
        frozen(service_pids(faulty.cluster, "certificate")),
    ):
        time.sleep(1.5)  # a read it had blocked on Redis ends (empty), so none can take the new events
        response = client.BatchRegisterInvoices(invoice_service_pb2.BatchRegisterInvoicesRequest(requests=requests))
        traffic.names = {r.request_id: res.invoice.name for r, res in zip(requests, response.results, strict=True)}
        wait_until(lambda: len(client.ListInvoices(commissioned).invoices) == len(requests), timeout=60)
        redis.Redis.from_url(_redis_url(faulty)).flushall()
        rows(faulty.cluster, "commission", "DELETE FROM outbox RETURNING position")
    env = {**os.environ, **faulty.settings.as_environment(), "COLUMNS": "250"}
    assert faulty.cluster.infrastructure is not None
    env.update(BMC_DATABASE_URL=faulty.cluster.infrastructure.database_url, BMC_REDIS_URL=_redis_url(faulty))
    time.sleep(3)  # the certificate service finds nothing to catch up with
    with registry(faulty.settings, "broker", traffic.tenant) as client:
        assert len(client.ListInvoices(commissioned).invoices) == len(requests), "still behind"
    repaired = subprocess.run(
        [BMC, "audit", "reconcile", "--older-than", "0"], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"{len(requests)} certificates requested" in repaired.stdout, repaired.stdout
    reconcile(faulty, traffic, timeout=60)
    again = subprocess.run(
        [BMC, "audit", "reconcile", "--older-than", "0", "--check"], env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert again.stdout.startswith("0 behind"), again.stdout
    _report("log pruned while the certificate service was down", invoices=len(requests),
            reconciliation=repaired.stdout.strip())  # fmt: skip
