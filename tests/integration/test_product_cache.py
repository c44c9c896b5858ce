"""The Redis read-through cache: hits, misses, negative entries, invalidation,
and the catalog answering from PostgreSQL while Redis is down."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from google.protobuf import field_mask_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from services.cli.cluster import Cluster
from services.kit.settings import Settings
from services.product.cache import POSITIVE_TTL_SECONDS
from tests.conftest import Platform, free_port_base, make_settings
from tests.integration.clients import wait_until
from tests.integration.product_helpers import catalog, result_of


def _redis(platform: Platform) -> redis.Redis:
    assert platform.cluster.infrastructure is not None
    return redis.Redis.from_url(platform.cluster.infrastructure.redis_url)


def _get(settings: Settings, code: str) -> product_pb2.Product:
    with catalog(settings, role="auditor") as cat:
        return cat.GetProduct(product_service_pb2.GetProductRequest(name=f"products/{code}"))  # type: ignore[no-any-return]


def _rename(settings: Settings, code: str, name: str) -> None:
    with catalog(settings) as cat:
        cat.UpdateProduct(
            product_service_pb2.UpdateProductRequest(
                product=product_pb2.Product(name=f"products/{code}", display_name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )


def test_lookup_fills_the_cache_and_update_invalidates_it(platform: Platform) -> None:
    code = f"C-{uuid.uuid4().hex[:8].upper()}"
    key = f"{platform.settings.redis_prefix}product:{code}"
    cache = _redis(platform)
    with catalog(platform.settings) as cat:
        cat.create(code, "Mango tommy")
    assert cache.get(key) is None
    _get(platform.settings, code)
    cached = product_pb2.Product.FromString(cache.get(key))  # type: ignore[arg-type]
    assert cached.display_name == "Mango tommy"
    assert 0 < cache.ttl(key) <= POSITIVE_TTL_SECONDS  # type: ignore[operator]  # entries expire even if never invalidated
    _rename(platform.settings, code, "Mango tommy atkins")
    assert cache.get(key) is None, "an update must invalidate the cached entry"
    assert _get(platform.settings, code).display_name == "Mango tommy atkins"


def test_unknown_codes_are_cached_negatively_until_created(platform: Platform) -> None:
    code = f"N-{uuid.uuid4().hex[:8].upper()}"
    missing = f"{platform.settings.redis_prefix}product-missing"
    cache = _redis(platform)
    with catalog(platform.settings) as cat:
        response = cat.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=[f"products/{code}"]))
        assert list(response.missing) == [f"products/{code}"]
        assert cache.hexists(missing, code)
        cat.create(code, "Lulo")
        assert not cache.hexists(missing, code)
        assert _get(platform.settings, code).display_name == "Lulo"


def test_import_forgets_negative_entries(platform: Platform, tmp_path: Path) -> None:
    code = f"M-{uuid.uuid4().hex[:8].upper()}"
    with catalog(platform.settings) as cat:
        assert cat.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=[f"products/{code}"])).missing
        path = tmp_path / "one.csv"
        path.write_text(f"code,display_name,category,processing_level\n{code},Guayaba,AGRICULTURAL,NONE\n")
        result_of(cat.import_and_wait([str(path)]))
    assert _get(platform.settings, code).display_name == "Guayaba"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[Cluster, subprocess.Popen[bytes], list[str]]]:
    """A product service whose Redis the test can stop and start (with persistence)."""
    port = free_port_base() + 8
    command = [
        str(Path(sys.executable).parent / "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(tmp_path), "--appendonly", "yes", "--save", "",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    settings = make_settings(tmp_path / "data", "embedded", redis_url=f"redis://127.0.0.1:{port}/0")
    with Cluster(settings, services=["product"]) as cluster:
        yield cluster, server, command
    server.terminate()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_catalog_answers_from_postgresql_while_redis_is_down(
    own_redis: tuple[Cluster, subprocess.Popen[bytes], list[str]],
) -> None:
    cluster, server, command = own_redis
    settings = cluster.settings
    code = f"O-{uuid.uuid4().hex[:8].upper()}"
    with catalog(settings) as cat:
        cat.create(code, "Papaya")
    assert _get(settings, code).display_name == "Papaya"  # now cached
    server.terminate()
    server.wait()
    assert _get(settings, code).display_name == "Papaya"
    _rename(settings, code, "Papaya maradol")  # invalidation cannot reach Redis
    assert _get(settings, code).display_name == "Papaya maradol"
    restarted = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=int(command[command.index("--port") + 1]))
        wait_until(lambda: _answers(client), timeout=10)
        key = f"{settings.redis_prefix}product:{code}"
        assert client.get(key) is not None, "the stale entry survived on disk"
        # The replica that renamed it delivers the invalidation once its breaker retries (5 s),
        # whichever replica serves the next lookups.
        wait_until(lambda: client.get(key) is None, timeout=10)
        names = {_get(settings, code).display_name for _ in range(20)}
        assert names == {"Papaya maradol"}, "stale cache served after the outage"
    finally:
        restarted.terminate()
        restarted.wait()


def test_a_frozen_redis_falls_back_to_postgresql_within_the_callers_deadline(
    own_redis: tuple[Cluster, subprocess.Popen[bytes], list[str]],
) -> None:
    """Redis stopped mid-flight (SIGSTOP: connections stay open, nothing
    answers): lookups with a 2 s deadline, as the invoice service makes them,
    still answer from PostgreSQL."""
    cluster, server, _ = own_redis
    code = f"F-{uuid.uuid4().hex[:8].upper()}"
    with catalog(cluster.settings) as cat:
        cat.create(code, "Guanabana")
        assert _get(cluster.settings, code).display_name == "Guanabana"  # cached
        server.send_signal(signal.SIGSTOP)
        try:
            answers = [
                cat.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=[f"products/{code}"]), timeout=2)
                for _ in range(3)
            ]
        finally:
            server.send_signal(signal.SIGCONT)
    assert [[p.display_name for p in a.products] for a in answers] == [["Guanabana"]] * 3
