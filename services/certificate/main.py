"""Wiring of the certificate service: `python -m services.certificate.main`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bmc.certificate.v1 import certificate_service_pb2, certificate_service_pb2_grpc
from bmc.commission.v1 import commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_service_pb2_grpc
from services.certificate.api import CertificateApi
from services.certificate.consumer import CertificateConsumer
from services.certificate.debris import DebrisSweeper
from services.certificate.issuing import Issuer
from services.certificate.store import CertificateStore
from services.kit.catchup import remote_feed
from services.kit.event_wiring import Subscription, start_relay, subscribe
from services.kit.events import concurrently
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
    await start_relay(resources, "certificate")
    dead_letters = await subscribe(
        resources,
        "certificate",
        [
            Subscription(
                "commission",
                concurrently(CertificateConsumer(issuer).handle),
                remote_feed(
                    lambda r: commissions.call(commissions.stub.ListCommissionEvents, r),
                    commission_service_pb2.ListCommissionEventsRequest,
                ),
                count=64,  # a read is applied concurrently: enough to keep every render process busy
            )
        ],
        certificate_service_pb2.ListDeadLettersResponse,
    )

    async def close_issuer() -> None:
        issuer.close()

    sweeper = DebrisSweeper(issuer.objects, store)
    sweeper.start()
    resources.on_stop += [sweeper.stop, close_issuer, invoices.close, commissions.close]
    api = CertificateApi(store, issuer, RequestKeys(resources.database.pool))
    api.dead_letters = dead_letters
    return api


DEFINITION = ServiceDefinition(
    name="certificate",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=certificate_service_pb2_grpc.add_CertificateServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
