"""Direct reads of a service's own PostgreSQL database, for what tests
check below the API: table shapes, indexes, query plans."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from services.cli.cluster import Cluster
from services.kit.database import Database, asyncpg_kwargs, database_name, drop_database, open_database, service_url

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def rows(cluster: Cluster, service: str, query: str, *args: object, setup: str = "") -> list[tuple[object, ...]]:
    """The rows of `query` in `service`'s database (after `setup`, on the same connection)."""
    assert cluster.infrastructure is not None
    url = service_url(cluster.infrastructure.database_url, database_name(cluster.settings, service))

    async def read() -> list[tuple[object, ...]]:
        connection = await asyncpg.connect(**asyncpg_kwargs(url))
        try:
            if setup:
                await connection.execute(setup)
            return [tuple(r) for r in await connection.fetch(query, *args)]
        finally:
            await connection.close()

    return asyncio.run(read())


def plan(cluster: Cluster, service: str, query: str, *args: object) -> str:
    """The plan PostgreSQL picks for `query` when sequential scans are out of
    the question, as they are on a large table: whatever scan is left names
    the index the query can use, or is still a sequential scan."""
    lines = rows(cluster, service, f"EXPLAIN {query}", *args, setup="SET enable_seqscan = off")
    return "\n".join(str(line[0]) for line in lines)


@asynccontextmanager
async def fresh_database(cluster: Cluster, service: str) -> AsyncIterator[Database]:
    """A database of its own with `service`'s schema (migrated from
    scratch) on the cluster's server, dropped afterwards."""
    assert cluster.infrastructure is not None
    url = cluster.infrastructure.database_url
    settings = cluster.settings.model_copy(update={"db_prefix": f"bmct{uuid.uuid4().hex[:8]}_"})
    database = await open_database(settings, url, service, SERVICES_DIR / service / "migrations")
    try:
        yield database
    finally:
        await database.close()
        await drop_database(url, database_name(settings, service))
