"""Redis read-through cache of catalog lookups.

Found products are cached one key each (serialized proto, with a TTL);
unknown codes are remembered in one hash so that an import can forget them
all with a single command. Any Redis failure counts as a miss and opens a
short breaker, so the catalog keeps answering from PostgreSQL while Redis is
down; invalidations that could not be delivered are replayed once Redis is
back (within a second of the breaker's retry), so no stale entry outlives an
outage by more than that, on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from bmc.product.v1 import product_pb2
from services.kit.deadlines import bounded
from services.kit.metrics import CACHE_LOOKUPS

log = structlog.get_logger("bmc.product.cache")

POSITIVE_TTL_SECONDS = 3600
MISSING_LIMIT = 1_000_000
PENDING_LIMIT = 100_000
BREAKER_SECONDS = 5.0
CACHE_SECONDS = 0.5  # longest a cache call may take, whatever the deadline
_T = TypeVar("_T")
# A batch of found products in one command: a pipeline of a hundred SETs costs
# redis-py more to pack and parse than the lookup itself. (With Redis Cluster
# the keys would need one hash slot; the deployment uses a single shard.)
SET_MANY = """
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl) end
return #KEYS
"""


class _Unavailable(Exception):
    pass


class ProductCache:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}product:"
        self._missing = f"{prefix}product-missing"
        self._open_until = 0.0
        self._pending: set[str] = set()
        self._pending_all = False
        self._set_many = redis.register_script(SET_MANY)
        self.hits = 0
        self.misses = 0

    def _key(self, code: str) -> str:
        return self._prefix + code

    async def _call(self, action: Callable[[], Awaitable[_T]]) -> _T:
        """Runs `action` against Redis, or raises `_Unavailable` (breaker open or failure)."""
        if time.monotonic() < self._open_until:
            raise _Unavailable
        try:
            if self._pending or self._pending_all:
                await self._replay()
            # A cache must answer fast or be skipped: at most a quarter of what is left of the
            # caller's deadline (a frozen Redis would otherwise hold the call past it), PostgreSQL after.
            async with asyncio.timeout(bounded(CACHE_SECONDS, share=0.25)):
                return await action()
        except (RedisError, OSError, TimeoutError) as exc:
            self._open_until = time.monotonic() + BREAKER_SECONDS
            log.warning("redis unavailable, serving from PostgreSQL", error=str(exc), retry_in_s=BREAKER_SECONDS)
            raise _Unavailable from exc

    async def _replay(self) -> None:
        if self._pending_all:
            async for key in self._redis.scan_iter(match=self._prefix + "*", count=10_000):
                await self._redis.unlink(key)
            await self._redis.unlink(self._missing)
        else:
            await self._forget(list(self._pending))
        self._pending.clear()
        self._pending_all = False
        log.info("replayed cache invalidations missed during a Redis outage")

    async def replay_when_back(self, every: float = 1.0) -> None:
        """Delivers the missed invalidations as soon as Redis answers again,
        rather than at this replica's next lookup: the other replicas read
        the same Redis, and would serve what this one changed meanwhile."""
        while True:
            await asyncio.sleep(every)
            if (self._pending or self._pending_all) and time.monotonic() >= self._open_until:
                with contextlib.suppress(_Unavailable):
                    await self._call(self._redis.ping)

    async def _forget(self, codes: Sequence[str]) -> None:
        for start in range(0, len(codes), 10_000):
            batch = codes[start : start + 10_000]
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.unlink(*(self._key(c) for c in batch))
                pipe.hdel(self._missing, *batch)
                await pipe.execute()

    async def lookup(self, codes: Sequence[str]) -> tuple[dict[str, product_pb2.Product], set[str]]:
        """Cached products by code, and codes known to be missing."""

        async def fetch() -> list[list[bytes | None]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.mget([self._key(c) for c in codes])
                pipe.hmget(self._missing, list(codes))
                return list(await pipe.execute())

        try:
            values, flags = await self._call(fetch)
        except _Unavailable:
            self.misses += len(codes)
            CACHE_LOOKUPS.labels("unavailable").inc(len(codes))
            return {}, set()
        found = {code: product_pb2.Product.FromString(v) for code, v in zip(codes, values, strict=True) if v}
        missing = {code for code, flag in zip(codes, flags, strict=True) if flag}
        self.hits += len(found) + len(missing)
        self.misses += len(codes) - len(found) - len(missing)
        CACHE_LOOKUPS.labels("hit").inc(len(found) + len(missing))
        CACHE_LOOKUPS.labels("miss").inc(len(codes) - len(found) - len(missing))
        return found, missing

    async def store(self, found: Sequence[product_pb2.Product], missing: Sequence[str]) -> None:
        if not found and not missing:
            return

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                if found:
                    keys = [self._key(product.code) for product in found]
                    values = [product.SerializeToString() for product in found]
                    await self._set_many(keys=keys, args=[*values, POSITIVE_TTL_SECONDS], client=pipe)
                if missing:
                    pipe.hset(self._missing, mapping=dict.fromkeys(missing, b"1"))
                    pipe.hlen(self._missing)
                results = await pipe.execute()
            if missing and results[-1] > MISSING_LIMIT:
                await self._redis.unlink(self._missing)

        with contextlib.suppress(_Unavailable):  # a cache that cannot be filled is only slower
            await self._call(write)

    async def invalidate(self, codes: Sequence[str]) -> None:
        """Forgets these codes, found or missing (after create, update, import)."""
        if not codes:
            return
        try:
            await self._call(lambda: self._forget(codes))
        except _Unavailable:
            self._pending.update(codes)
            if len(self._pending) > PENDING_LIMIT:
                self._pending_all = True

    async def forget_missing(self) -> None:
        """Forgets every code remembered as missing (an import added products)."""
        try:
            await self._call(lambda: self._redis.unlink(self._missing))
        except _Unavailable:
            self._pending_all = True
