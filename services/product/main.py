"""Wiring of the product service: `python -m services.product.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.product.v1 import product_service_pb2_grpc
from services.kit.server import Resources, ServiceDefinition, run_service
from services.product.api import ProductApi


async def build(resources: Resources) -> ProductApi:
    # Until its issue lands every RPC falls through to the generated base
    # class, which the kit answers with UNIMPLEMENTED.
    return ProductApi()  # type: ignore[abstract]


DEFINITION = ServiceDefinition(
    name="product",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=product_service_pb2_grpc.add_ProductServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
