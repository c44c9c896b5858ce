"""One PostgreSQL database per service: created when missing, migrated with
Alembic at start-up, reached through an async SQLAlchemy engine (asyncpg)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.kit.settings import Settings
from services.kit.sql import Where

# Serialises migrations when several worker processes of a service start at once.
_MIGRATION_LOCK_KEY = 0x626D63  # "bmc"


def database_name(settings: Settings, service: str) -> str:
    return f"{settings.db_prefix}{service}"


def service_url(server_url: str, database: str) -> URL:
    """The SQLAlchemy/asyncpg URL of `database` on the server of `server_url`
    (which may be a unix-socket URL such as the embedded server's)."""
    url = make_url(server_url)
    return url.set(drivername="postgresql+asyncpg", database=database)


def asyncpg_kwargs(url: URL) -> dict[str, object]:
    """asyncpg.connect() arguments for a SQLAlchemy URL (TCP or unix socket)."""
    kwargs: dict[str, object] = {"user": url.username or "postgres", "database": url.database}
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


class PooledStore:
    """A store that speaks asyncpg directly on its hot paths: `open()` makes
    the pool (after the engine's migrations ran), `close()` ends it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pool: asyncpg.Pool | None = None

    async def open(self, max_size: int = 10) -> None:
        self._pool = await asyncpg.create_pool(**asyncpg_kwargs(self._engine.url), min_size=1, max_size=max_size)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, f"{type(self).__name__}.open() was not awaited"
        return self._pool

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


async def open_database(settings: Settings, server_url: str, service: str, migrations: Path) -> AsyncEngine:
    """The engine of the service's own database, created and migrated to head."""
    database = database_name(settings, service)
    await ensure_database(server_url, database)
    engine = create_async_engine(service_url(server_url, database), pool_size=10, max_overflow=10, pool_pre_ping=True)
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, migrations)
    return engine


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return result.scalar_one_or_none()
