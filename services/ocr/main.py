"""Wiring of the ocr service: `python -m services.ocr.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.ocr.v1 import ocr_service_pb2_grpc
from services.ocr.api import OcrApi
from services.kit.server import Resources, ServiceDefinition, run_service


async def build(resources: Resources) -> OcrApi:
    return OcrApi()


DEFINITION = ServiceDefinition(
    name="ocr",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=ocr_service_pb2_grpc.add_OcrServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
