"""Events out and in: the outbox relay on Redis Streams, and the lifecycle
consumer (commission, certificate) with redelivery and crash recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.cli.cluster import Cluster
from services.kit.envelopes import Event
from services.kit.events import StreamConsumer, one_by_one, stream_name
from services.kit.settings import Settings
from tests.conftest import Platform, make_settings
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry


def _redis_url(cluster: Cluster) -> str:
    assert cluster.infrastructure is not None
    return cluster.infrastructure.redis_url


def _stream(settings: Settings, url: str, service: str) -> list[Event]:
    client = redis.Redis.from_url(url)
    return [Event.from_fields(fields) for _, fields in client.xrange(stream_name(settings.redis_prefix, service))]


def _wait(condition: Callable[[], object], timeout: float = 15.0) -> None:
    wait_until(condition, timeout)


@pytest.fixture(scope="module")
def registration(platform: Platform) -> Platform:
    load_sample_catalog(platform.settings)
    return platform


def test_registrations_are_published_in_order(registration: Platform) -> None:
    url = _redis_url(registration.cluster)
    with registry(registration.settings) as reg:
        names = [reg.register(invoice()).name.removeprefix("invoices/") for _ in range(3)]
    _wait(lambda: set(names) <= {e.stream_id for e in _stream(registration.settings, url, "invoice")})
    events = _stream(registration.settings, url, "invoice")
    positions = [e.position for e in events if e.position]  # other tests inject events of position 0
    assert positions == sorted(positions)
    # Each invoice's stream starts with its registration (the commission service may already have moved it on).
    mine = [e for e in events if e.stream_id in names and e.version == 1]
    assert [(e.stream_id, e.type) for e in mine] == [(name, "InvoiceRegistered") for name in names]
    assert mine[0].tenant == "brokers/acme"
    assert mine[0].data["registration_number"]


def _publish(settings: Settings, url: str, service: str, event_type: str, invoice_name: str, event_id: str) -> None:
    event = Event(
        event_id,
        event_type,
        uuid.uuid4().hex,
        1,
        1,
        "brokers/acme",
        "",
        {"invoice": invoice_name, "certificate": "certificates/c1"},
    )
    redis.Redis.from_url(url).xadd(stream_name(settings.redis_prefix, service), event.fields())  # type: ignore[arg-type]


def test_commission_and_certificate_events_move_the_invoice_once(own_registry: Cluster) -> None:
    """The events as the commission and certificate services would publish
    them (no such services run here, so these are the only ones)."""
    url = _redis_url(own_registry)
    with registry(own_registry.settings) as reg:
        registered = reg.register(invoice())

        def state() -> int:
            return reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name)).state  # type: ignore[no-any-return]

        commission_id, certificate_id = str(uuid.uuid4()), str(uuid.uuid4())
        _publish(own_registry.settings, url, "commission", "CommissionCalculated", registered.name, commission_id)
        _wait(lambda: state() == invoice_pb2.INVOICE_STATE_COMMISSIONED)
        for _ in range(2):  # delivered twice: applied once
            _publish(own_registry.settings, url, "certificate", "CertificateIssued", registered.name, certificate_id)
        _wait(lambda: state() == invoice_pb2.INVOICE_STATE_CERTIFIED)
        time.sleep(1.0)
        final = reg.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=registered.name))
        history = reg.ListInvoiceEvents(invoice_service_pb2.ListInvoiceEventsRequest(parent=registered.name))
    assert final.certificate == "certificates/c1"
    assert [e.type for e in history.events] == ["InvoiceRegistered", "CommissionCalculated", "InvoiceCertified"]


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(make_settings(tmp_path, "embedded"), services=["product", "invoice"]) as cluster:
        load_sample_catalog(cluster.settings)
        yield cluster


def test_relay_resumes_after_a_crash_without_loss_or_reordering(own_registry: Cluster) -> None:
    settings, url = own_registry.settings, _redis_url(own_registry)
    with registry(settings) as reg:
        for _ in range(10):
            reg.register(invoice())
    own_registry.kill("invoice")  # whatever the relay had not published yet is still in PostgreSQL
    own_registry.restart("invoice")
    with registry(settings) as reg:
        for _ in range(5):
            reg.register(invoice())
    _wait(lambda: {e.position for e in _stream(settings, url, "invoice")} >= set(range(1, 16)))
    positions = [e.position for e in _stream(settings, url, "invoice")]
    deduplicated = list(dict.fromkeys(positions))
    assert deduplicated == list(range(1, 16)), "every event, in order (a repeat after the crash is allowed)"


def test_a_message_left_pending_by_a_crashed_consumer_is_reclaimed(registration: Platform) -> None:
    url = _redis_url(registration.cluster)
    stream = f"{registration.settings.redis_prefix}test.{uuid.uuid4().hex[:6]}"
    seen: list[str] = []

    async def crash(event: Event) -> None:
        raise RuntimeError("consumer died mid-way")

    async def record(event: Event) -> None:
        seen.append(event.event_id)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(url)
        first = StreamConsumer(client, stream, "g", "first", one_by_one(crash), claim_idle_ms=200, block_ms=100)
        second = StreamConsumer(client, stream, "g", "second", one_by_one(record), claim_idle_ms=200, block_ms=100)
        await first.ensure_group()
        event = Event("e-1", "Test", "s", 1, 1, "", "", {"x": 1})
        await client.xadd(stream, event.fields())  # type: ignore[arg-type]
        with pytest.raises(RuntimeError):
            await first.poll_once()
        await asyncio.sleep(0.3)
        await second.poll_once()
        await second.poll_once()  # nothing left: acknowledged once
        pending = await client.xpending(stream, "g")
        await client.delete(stream)
        await client.aclose()
        assert pending["pending"] == 0

    asyncio.run(scenario())
    assert seen == ["e-1"]
