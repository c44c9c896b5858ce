"""Wiring of the commission service: `python -m services.commission.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.commission.v1 import commission_service_pb2_grpc
from services.commission.api import CommissionApi
from services.kit.server import Resources, ServiceDefinition, run_service


async def build(resources: Resources) -> CommissionApi:
    # Until its issue lands every RPC falls through to the generated base
    # class, which the kit answers with UNIMPLEMENTED.
    return CommissionApi()  # type: ignore[abstract]


DEFINITION = ServiceDefinition(
    name="commission",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=commission_service_pb2_grpc.add_CommissionServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
