"""One worker of a service at a time does a job (relaying its outbox,
catching up a consumer): the one holding a PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("bmc.events")


async def while_leader(pool: asyncpg.Pool, name: str, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    """Runs `work(connection)` while this process holds the advisory lock
    `name` on that connection: with several workers of a service, one works
    and the others stand by, taking over when its session ends."""
    lock = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    while True:
        try:
            async with pool.acquire() as leader:
                if not await leader.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                    await asyncio.sleep(2.0)
                    continue
                try:
                    await work(leader)
                finally:
                    with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                        await leader.execute("SELECT pg_advisory_unlock($1)", lock)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("paused", work=name, error=str(exc))
            await asyncio.sleep(1.0)
