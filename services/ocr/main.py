"""Wiring of the ocr service: `python -m services.ocr.main`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bmc.ocr.v1 import ocr_service_pb2_grpc
from services.kit.server import Resources, ServiceDefinition, run_service
from services.ocr.api import OcrApi
from services.ocr.reading import Limits, TesseractPool
from services.ocr.store import ExtractionStore


async def build(resources: Resources) -> OcrApi:
    settings = resources.settings
    store = ExtractionStore(resources.engine)
    await store.open()
    engines = await asyncio.to_thread(TesseractPool, settings.ocr_engines)  # loading the Spanish model takes a while
    limits = Limits(max_bytes=settings.ocr_max_bytes, max_pages=settings.ocr_max_pages)

    async def close_engines() -> None:
        engines.close()

    resources.on_stop += [store.close, close_engines]
    return OcrApi(store, engines, limits, settings.ocr_engines)


DEFINITION = ServiceDefinition(
    name="ocr",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=ocr_service_pb2_grpc.add_OcrServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
