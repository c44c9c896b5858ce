"""Wiring of the certificate service: `python -m services.certificate.main`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bmc.certificate.v1 import certificate_service_pb2_grpc
from bmc.commission.v1 import commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_service_pb2_grpc
from services.certificate.api import CertificateApi
from services.certificate.consumer import CertificateConsumer
from services.certificate.issuing import Issuer
from services.certificate.store import CertificateStore
from services.kit.events import OutboxRelay, StreamConsumer, concurrently, stream_name
from services.kit.idempotency import RequestKeys
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.service_clients import ServiceClient


async def build(resources: Resources) -> CertificateApi:
    settings = resources.settings
    store = CertificateStore(resources.database)
    invoices = ServiceClient(settings, "certificate", "invoice", invoice_service_pb2_grpc.InvoiceServiceStub)
    commissions = ServiceClient(
        settings, "certificate", "commission", commission_service_pb2_grpc.CommissionServiceStub
    )
    issuer = await asyncio.to_thread(Issuer, settings, store, invoices, commissions)
    await issuer.warm()
    relay = OutboxRelay(
        store.pool, resources.redis, stream_name(settings.redis_prefix, "certificate"), "certificate.events"
    )
    consumer = StreamConsumer(
        resources.redis,
        stream_name(settings.redis_prefix, "commission"),
        "certificate",
        f"certificate-{os.getpid()}",
        concurrently(CertificateConsumer(issuer).handle),
        count=64,  # a read is applied concurrently: enough to keep every render process busy
        health=resources.health,
    )
    await relay.start()
    await consumer.start()

    async def close_issuer() -> None:
        issuer.close()

    resources.on_stop += [consumer.stop, relay.stop, close_issuer, invoices.close, commissions.close]
    return CertificateApi(store, issuer, RequestKeys(resources.database.pool))


DEFINITION = ServiceDefinition(
    name="certificate",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=certificate_service_pb2_grpc.add_CertificateServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
