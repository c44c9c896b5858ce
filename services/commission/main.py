"""Wiring of the commission service: `python -m services.commission.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.commission.v1 import commission_service_pb2, commission_service_pb2_grpc
from bmc.invoice.v1 import invoice_service_pb2, invoice_service_pb2_grpc
from bmc.product.v1 import product_service_pb2_grpc
from services.commission import reference
from services.commission.api import CommissionApi
from services.commission.consumer import CommissionConsumer
from services.commission.store import CommissionStore
from services.kit.catchup import remote_feed
from services.kit.event_wiring import Subscription, start_relay, subscribe
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.service_clients import ServiceClient


async def build(resources: Resources) -> CommissionApi:
    settings = resources.settings
    store = CommissionStore(resources.database)
    await store.seed(reference.schedules(), reference.uvt_values())
    withholding = reference.withholding_rules()
    products = ServiceClient(settings, "commission", "product", product_service_pb2_grpc.ProductServiceStub)
    api = CommissionApi(store, products, withholding, resources.database)
    invoices = ServiceClient(settings, "commission", "invoice", invoice_service_pb2_grpc.InvoiceServiceStub)
    await start_relay(resources, "commission")
    api.dead_letters = await subscribe(
        resources,
        "commission",
        [
            Subscription(
                "invoice",
                CommissionConsumer(store, lambda: store.book(withholding)).handle,
                remote_feed(
                    lambda r: invoices.call(invoices.stub.ListInvoiceEvents, r),
                    invoice_service_pb2.ListInvoiceEventsRequest,
                    parent="invoices/-",
                ),
                count=500,
            )
        ],
        commission_service_pb2.ListDeadLettersResponse,
    )
    await api.settlements.resume_unfinished()
    resources.on_stop += [api.settlements.close, products.close, invoices.close]
    return api


DEFINITION = ServiceDefinition(
    name="commission",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=commission_service_pb2_grpc.add_CommissionServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
