"""The embedded servers keep what they were given: the embedded Redis writes
an append-only file, so streams and consumer groups survive a crash."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from services.kit.embedded import ensure_infrastructure
from services.kit.settings import Settings


def test_the_embedded_redis_survives_a_crash_with_its_streams(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://unused@127.0.0.1:1/unused")
    first = ensure_infrastructure(settings)
    try:
        client = redis.Redis.from_url(first.redis_url)
        ids = [client.xadd("bmc:test.events", {"n": str(n)}) for n in range(100)]
        client.xgroup_create("bmc:test.events", "consumers", id="0")
        client.xreadgroup("consumers", "c1", {"bmc:test.events": ">"}, count=10)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        time.sleep(1.5)  # appendfsync everysec: what a crash may lose is the last second
        assert first._redis is not None
        first._redis.kill()  # SIGKILL: no shutdown save
        first._redis.wait()
    finally:
        first.close()
    second = ensure_infrastructure(settings)
    try:
        client = redis.Redis.from_url(second.redis_url)
        entries = client.xrange("bmc:test.events")
        groups = client.xinfo_groups("bmc:test.events")
        pending = client.xpending("bmc:test.events", "consumers")
    finally:
        second.close()
    assert [entry_id for entry_id, _ in entries] == ids
    assert [g["name"] for g in groups] == [b"consumers"]
    assert pending["pending"] == 10
