"""Wiring of the ocr service: `python -m services.ocr.main`."""

from __future__ import annotations

from pathlib import Path

from bmc.ocr.v1 import ocr_service_pb2_grpc
from services.kit.server import Resources, ServiceDefinition, run_service
from services.kit.workers import IsolatedPool
from services.ocr.api import OcrApi
from services.ocr.reading import Limits, load_worker_engine
from services.ocr.store import ExtractionStore


async def build(resources: Resources) -> OcrApi:
    settings = resources.settings
    limits = Limits(max_bytes=settings.ocr_max_bytes, max_pages=settings.ocr_max_pages)
    # One Tesseract engine per reader process, loaded once (the Spanish model takes a while).
    readers = IsolatedPool(
        settings.ocr_engines, settings.reader_memory_mib * 2**20, load_worker_engine, name="ocr-reader"
    )

    await readers.start()

    async def close_readers() -> None:
        readers.close()

    resources.on_stop.append(close_readers)
    return OcrApi(ExtractionStore(resources.database), readers, limits)


DEFINITION = ServiceDefinition(
    name="ocr",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=ocr_service_pb2_grpc.add_OcrServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
