"""Wiring of the product service: `python -m services.product.main`."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from bmc.product.v1 import product_service_pb2_grpc
from services.kit.background import cancel
from services.kit.idempotency import RequestKeys
from services.kit.operations import OperationStore
from services.kit.server import Resources, ServiceDefinition, run_service
from services.product.api import OPERATIONS, ProductApi
from services.product.cache import ProductCache
from services.product.imports import ProductImporter
from services.product.locations import Buckets, ImportRoots
from services.product.store import CatalogStore


async def build(resources: Resources) -> ProductApi:
    database, settings = resources.database, resources.settings
    cache = ProductCache(resources.redis, settings.redis_prefix)
    replaying = asyncio.create_task(cache.replay_when_back(), name="cache-replay")
    resources.on_stop.append(partial(cancel, replaying))
    operations = OperationStore(database.pool, OPERATIONS)
    settings.import_directories[0].mkdir(parents=True, exist_ok=True)
    importer = ProductImporter(
        database,
        operations,
        cache,
        ImportRoots(
            [*map(str, settings.import_directories), *settings.import_buckets],
            Buckets(settings.import_s3_endpoint, settings.import_s3_region, settings.import_gcs_endpoint),
        ),
        settings.data_dir / "imports",
        settings.import_chunk_rows,
        settings.import_bulk_rows,
    )
    await importer.resume_unfinished()
    resources.on_stop.append(importer.close)
    return ProductApi(CatalogStore(database), cache, importer, operations, RequestKeys(database.pool))


DEFINITION = ServiceDefinition(
    name="product",
    migrations=Path(__file__).parent / "migrations",
    build=build,
    register=product_service_pb2_grpc.add_ProductServiceServicer_to_server,
)

if __name__ == "__main__":
    run_service(DEFINITION)
