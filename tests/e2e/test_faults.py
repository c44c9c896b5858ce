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
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import grpc
import psutil
import pytest
import redis

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2, certificate_service_pb2_grpc
from bmc.commission.v1 import commission_pb2, commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.cli.cluster import Cluster
from services.cli.commissions import ensure_uvt
from services.commission.domain import period_of
from services.dian import calendar
from services.kit.envelopes import Event
from services.kit.events import stream_name
from tests.conftest import Platform, make_settings
from tests.integration.clients import Client
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry

BATCH = 5
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
                time.sleep(0.05)

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
        Client(settings, "commission", commission_service_pb2_grpc.CommissionServiceStub, "operator") as commissions,
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
            settlement = _settle(commissions, period, broker)
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


def _settle(commissions: Client, period: str, broker: str) -> commission_pb2.Settlement:
    operation = commissions.RunSettlement(commission_service_pb2.RunSettlementRequest(period=period, broker=broker))
    done = commissions.wait(operation.name)
    assert not done.HasField("error"), done.error
    settlement = commission_pb2.Settlement()
    assert done.response.Unpack(settlement)
    return settlement


def _report(fault: str, **figures: object) -> None:
    print(f"\nFAULT {fault}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


@contextmanager
def _frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _redis_url(platform: Platform) -> str:
    assert platform.cluster.infrastructure is not None
    return platform.cluster.infrastructure.redis_url


def _redis_pid(platform: Platform) -> int:
    assert platform.cluster.infrastructure is not None
    return platform.cluster.infrastructure.server_pids["redis"]


def _postgres_pids(platform: Platform) -> list[int]:
    assert platform.cluster.infrastructure is not None
    postmaster = psutil.Process(platform.cluster.infrastructure.server_pids["postgresql"])
    return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]


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
        os.kill(_redis_pid(faulty), signal.SIGKILL)
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
        with _frozen([p.pid for p in faulty.cluster.processes["commission"]]):  # a backlog builds up unread
            before = len(traffic.names)
            traffic.wait_for(before + 40 * BATCH)
            backlog = len(traffic.names) - before
            client.flushall()
            lost = time.monotonic()
    certified = reconcile(faulty, traffic)
    _report("redis lost its data", invoices=len(traffic.names), unread_registrations_lost=backlog,
            all_certified_after_s=f"{certified - lost:.1f}")  # fmt: skip


def test_redis_frozen_loses_and_duplicates_nothing(faulty: Platform) -> None:
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        with _frozen([_redis_pid(faulty)]):
            time.sleep(5)
        healed = time.monotonic()
        recovery = traffic.first_success_after(healed)
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    _report("redis frozen 5 s", invoices=len(traffic.names), first_success_s=f"{recovery:.2f}")


def test_postgresql_frozen_loses_and_duplicates_nothing(faulty: Platform) -> None:
    with Traffic(faulty) as traffic:
        traffic.wait_for(4 * BATCH)
        with _frozen(_postgres_pids(faulty)):
            time.sleep(5)
        healed = time.monotonic()
        recovery = traffic.first_success_after(healed)
        traffic.wait_for(len(traffic.names) + 4 * BATCH)
    reconcile(faulty, traffic)
    _report("postgresql frozen 5 s", invoices=len(traffic.names), first_success_s=f"{recovery:.2f}")


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
    with Client(faulty.settings, "commission", commission_service_pb2_grpc.CommissionServiceStub, "operator") as ops:
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
