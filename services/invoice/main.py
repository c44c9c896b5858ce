"""Wiring of the invoice service: `python -m services.invoice.main`."""

from __future__ import annotations

import os
from pathlib import Path

from bmc.invoice.v1 import invoice_service_pb2_grpc
from bmc.product.v1 import product_service_pb2_grpc
from services.invoice.api import InvoiceApi
from services.invoice.consumer import LifecycleConsumer
from services.invoice.store import RELAY_QUERY, InvoiceStore
from services.kit.events import OutboxRelay, StreamConsumer, one_by_one, stream_name
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.service_clients import ServiceClient
from services.kit.workers import IsolatedPool


async def build(resources: Resources) -> InvoiceApi:
    store = InvoiceStore(resources.database)
    settings = resources.settings
    products = ServiceClient(settings, "invoice", "product", product_service_pb2_grpc.ProductServiceStub)
    relay = OutboxRelay(
        store.pool, resources.redis, stream_name(settings.redis_prefix, "invoice"), "invoice.events", RELAY_QUERY
    )
    lifecycle = LifecycleConsumer(store)
    consumers = [
        StreamConsumer(
            resources.redis,
            stream_name(settings.redis_prefix, source),
            "invoice",
            f"invoice-{os.getpid()}",
            one_by_one(lifecycle.handle),
            health=resources.health,
        )
        for source in ("commission", "certificate")
    ]
    await relay.start()
    for consumer in consumers:
        await consumer.start()
    # Uploaded files (ZIP, XML, CSV) are read in a process of their own, within a time and memory budget.
    readers = IsolatedPool(1, settings.reader_memory_mib * 2**20, name="document-reader")

    await readers.start()

    async def close_readers() -> None:
        readers.close()

    resources.on_stop += [relay.stop, *(c.stop for c in consumers), products.close, close_readers]
    api = InvoiceApi(store, products, settings, resources.database, readers)
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
