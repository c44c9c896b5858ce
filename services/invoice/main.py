"""Wiring of the invoice service: `python -m services.invoice.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.invoice.v1 import invoice_service_pb2_grpc
from services.invoice.api import InvoiceApi
from services.kit.server import Resources, ServiceDefinition, run_service


async def build(resources: Resources) -> InvoiceApi:
    # Until its issue lands every RPC falls through to the generated base
    # class, which the kit answers with UNIMPLEMENTED.
    return InvoiceApi()  # type: ignore[abstract]


DEFINITION = ServiceDefinition(
    name="invoice",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=invoice_service_pb2_grpc.add_InvoiceServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
