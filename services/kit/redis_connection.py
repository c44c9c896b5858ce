"""The async Redis client every service shares (cache, idempotency keys, streams)."""

from __future__ import annotations

import redis.asyncio as aioredis


def open_redis(url: str) -> aioredis.Redis:
    """A pooled client; `unix://` URLs reach the embedded server's socket."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30, socket_timeout=5)
