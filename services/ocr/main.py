"""Wiring of the ocr service: `python -m services.ocr.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.ocr.v1 import ocr_service_pb2_grpc
from services.kit.server import Resources, ServiceDefinition, run_service
from services.ocr.api import OcrApi


async def build(resources: Resources) -> OcrApi:
    # Until its issue lands every RPC falls through to the generated base
    # class, which the kit answers with UNIMPLEMENTED.
    return OcrApi()  # type: ignore[abstract]


DEFINITION = ServiceDefinition(
    name="ocr",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=ocr_service_pb2_grpc.add_OcrServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
