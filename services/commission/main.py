"""Wiring of the commission service: `python -m services.commission.main`."""

from __future__ import annotations

import os
from pathlib import Path

from bmc.commission.v1 import commission_service_pb2_grpc
from bmc.product.v1 import product_service_pb2_grpc
from services.commission import reference
from services.commission.api import CommissionApi
from services.commission.consumer import CommissionConsumer
from services.commission.store import CommissionStore
from services.kit.events import OutboxRelay, StreamConsumer, stream_name
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.service_clients import ServiceClient


async def build(resources: Resources) -> CommissionApi:
    settings = resources.settings
    store = CommissionStore(resources.database)
    await store.seed(reference.schedules(), reference.uvt_values())
    withholding = reference.withholding_rules()
    products = ServiceClient(settings, "commission", "product", product_service_pb2_grpc.ProductServiceStub)
    api = CommissionApi(store, products, withholding, resources.database)
    stream = stream_name(settings.redis_prefix, "commission")
    relay = OutboxRelay(store.pool, resources.redis, stream, "commission.events")
    consumer = StreamConsumer(
        resources.redis,
        stream_name(settings.redis_prefix, "invoice"),
        "commission",
        f"commission-{os.getpid()}",
        CommissionConsumer(store, lambda: store.book(withholding)).handle,
        count=500,
        health=resources.health,
    )
    await relay.start()
    await consumer.start()
    await api.settlements.resume_unfinished()
    resources.on_stop += [api.settlements.close, consumer.stop, relay.stop, products.close]
    return api


DEFINITION = ServiceDefinition(
    name="commission",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=commission_service_pb2_grpc.add_CommissionServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
