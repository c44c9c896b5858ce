"""Wiring of the certificate service: `python -m services.certificate.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.certificate.v1 import certificate_service_pb2_grpc
from services.certificate.api import CertificateApi
from services.kit.server import Resources, ServiceDefinition, run_service


async def build(resources: Resources) -> CertificateApi:
    # Until its issue lands every RPC falls through to the generated base
    # class, which the kit answers with UNIMPLEMENTED.
    return CertificateApi()  # type: ignore[abstract]


DEFINITION = ServiceDefinition(
    name="certificate",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=certificate_service_pb2_grpc.add_CertificateServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
