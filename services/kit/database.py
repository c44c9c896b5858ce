"""One PostgreSQL database per service: created when missing, migrated with
Alembic at start-up, then reached through one asyncpg pool per process.

SQLAlchemy is only Alembic's vehicle: its engine lives while the migrations
run and is disposed of before the service serves, so a process holds a
single pool (and stores speak SQL to asyncpg, with `Where` for filters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.kit.settings import Settings
from services.kit.sql import Where

# Serialises migrations when several worker processes of a service start at once.
_MIGRATION_LOCK_KEY = 0x626D63  # "bmc"
POOL_SIZE = 20


def database_name(settings: Settings, service: str) -> str:
    return f"{settings.db_prefix}{service}"


def service_url(server_url: str, database: str) -> URL:
    """The SQLAlchemy/asyncpg URL of `database` on the server of `server_url`
    (which may be a unix-socket URL such as the embedded server's)."""
    url = make_url(server_url)
    return url.set(drivername="postgresql+asyncpg", database=database)


def asyncpg_kwargs(url: URL) -> dict[str, Any]:
    """asyncpg.connect() arguments for a SQLAlchemy URL (TCP or unix socket)."""
    kwargs: dict[str, Any] = {"user": url.username or "postgres", "database": url.database}
    host = url.host or url.query.get("host")
    if isinstance(host, tuple):
        host = host[0]
    if host:
        kwargs["host"] = host
    if url.port:
        kwargs["port"] = url.port
    if url.password:
        kwargs["password"] = url.password
    return kwargs


@dataclass
class Database:
    """A service's own database: the process's pool, and dedicated
    connections for work that keeps session state (bulk loads, claims)."""

    pool: asyncpg.Pool
    connect_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def open(cls, url: URL, max_size: int = POOL_SIZE) -> Database:
        kwargs = asyncpg_kwargs(url)
        return cls(await asyncpg.create_pool(**kwargs, min_size=1, max_size=max_size), kwargs)

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool: the caller closes it."""
        return await asyncpg.connect(**self.connect_kwargs)

    async def close(self) -> None:
        await self.pool.close()


class PooledStore:
    """Base of a service's store: the database's pool, and filtered selects."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def pool(self) -> asyncpg.Pool:
        return self.database.pool

    async def select(self, where: Where, select: str, tail: str) -> list[asyncpg.Record]:
        """`select` filtered by `where`, then `tail` (ORDER BY, LIMIT)."""
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(where.query(select, tail), *where.args))


async def ensure_database(server_url: str, database: str) -> bool:
    """Creates `database` when missing; True when it was created."""
    maintenance = make_url(server_url)
    connection = await asyncpg.connect(**asyncpg_kwargs(maintenance))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists:
            return False
        try:
            await connection.execute(f'CREATE DATABASE "{database}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another process of the same service won the race
        return True
    finally:
        await connection.close()


async def drop_database(server_url: str, database: str) -> None:
    """Drops `database` (tests and `bmc reset`)."""
    connection = await asyncpg.connect(**asyncpg_kwargs(make_url(server_url)))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


def _upgrade(connection: Connection, migrations: Path) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    config = Config()
    config.set_main_option("script_location", str(migrations))
    script = ScriptDirectory.from_config(config)

    def upgrade(revision: str, _context: object) -> object:
        return script._upgrade_revs("head", revision)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev="head") as environment:
        environment.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
        with environment.begin_transaction():
            environment.run_migrations()


async def migrate(url: URL, migrations: Path) -> None:
    """Brings the database at `url` to the head of `migrations`."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, migrations)
    finally:
        await engine.dispose()


async def open_database(settings: Settings, server_url: str, service: str, migrations: Path) -> Database:
    """The service's own database, created and migrated to head."""
    database = database_name(settings, service)
    await ensure_database(server_url, database)
    url = service_url(server_url, database)
    await migrate(url, migrations)
    return await Database.open(url)
