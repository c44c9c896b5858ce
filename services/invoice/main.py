"""Wiring of the invoice service: `python -m services.invoice.main`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bmc.certificate.v1 import certificate_service_pb2, certificate_service_pb2_grpc
from bmc.commission.v1 import commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_service_pb2, invoice_service_pb2_grpc
from bmc.ocr.v1 import ocr_service_pb2_grpc
from bmc.product.v1 import product_service_pb2_grpc
from services.invoice.api import InvoiceApi
from services.invoice.consumer import LifecycleConsumer
from services.invoice.reconcile import Reconciler
from services.invoice.store import RELAY_QUERY, InvoiceStore
from services.kit.catchup import remote_feed
from services.kit.event_wiring import Subscription, start_relay, subscribe
from services.kit.events import one_by_one, stream_name
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.service_clients import ServiceClient
from services.kit.workers import IsolatedPool


async def build(resources: Resources) -> InvoiceApi:
    store = InvoiceStore(resources.database)
    settings = resources.settings
    products = ServiceClient(settings, "invoice", "product", product_service_pb2_grpc.ProductServiceStub)
    extractions = ServiceClient(settings, "invoice", "ocr", ocr_service_pb2_grpc.OcrServiceStub)
    commissions = ServiceClient(settings, "invoice", "commission", commission_service_pb2_grpc.CommissionServiceStub)
    certificates = ServiceClient(
        settings, "invoice", "certificate", certificate_service_pb2_grpc.CertificateServiceStub
    )
    await start_relay(resources, "invoice", RELAY_QUERY)
    lifecycle = one_by_one(LifecycleConsumer(store).handle)
    dead_letters = await subscribe(
        resources,
        "invoice",
        [
            Subscription(
                "commission",
                lifecycle,
                remote_feed(
                    lambda r: commissions.call(commissions.stub.ListCommissionEvents, r),
                    commission_service_pb2.ListCommissionEventsRequest,
                ),
            ),
            Subscription(
                "certificate",
                lifecycle,
                remote_feed(
                    lambda r: certificates.call(certificates.stub.ListCertificateEvents, r),
                    certificate_service_pb2.ListCertificateEventsRequest,
                ),
            ),
        ],
        invoice_service_pb2.ListDeadLettersResponse,
    )
    # Uploaded files (ZIP, XML, CSV) are read in a process of their own, within a time and memory budget.
    readers = IsolatedPool(1, settings.reader_memory_mib * 2**20, name="document-reader")

    await readers.start()

    async def close_readers() -> None:
        readers.close()

    resources.on_stop += [products.close, extractions.close, commissions.close, certificates.close, close_readers]
    api = InvoiceApi(store, products, settings, resources.database, readers, extractions)
    api.dead_letters = dead_letters
    api.reconciler = Reconciler(
        store, resources.redis, stream_name(settings.redis_prefix, "invoice"), commissions, certificates
    )
    api.reconciler.start(
        store.pool, settings.reconcile_interval_seconds, dt.timedelta(seconds=settings.reconcile_after_seconds)
    )
    resources.on_stop.insert(0, api.reconciler.stop)
    await api.importer.resume_unfinished()
    resources.on_stop[:0] = [api.importer.close, api.close]
    return api


DEFINITION = ServiceDefinition(
    name="invoice",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=invoice_service_pb2_grpc.add_InvoiceServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
