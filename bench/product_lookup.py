"""Catalog lookups over gRPC on a large catalog, next to a no-op RPC.

Loads a synthetic catalog (default 10M products) into a product service on
the embedded PostgreSQL, then measures on the same server in one run:
health check (no-op baseline), GetProduct uncached (random codes across the
catalog, so nearly every call misses Redis) and cached (a warm hot set), and
BatchGetProducts of 100 codes, uncached and cached.

    .venv/bin/python -m bench.product_lookup --rows 10000000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

import grpc

from bench.harness import Result, drive, health, platform, summary, unary
from bench.product_import import shards_for
from bmc.product.v1 import product_service_pb2
from services.kit.clients import aio_channel, bearer
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from tests.integration.product_helpers import catalog, result_of


def code(number: int) -> str:
    return f"products/P{number:010d}"


async def measure(settings: Settings, rows: int, seconds: float, concurrency: int) -> list[Result]:
    channels = [aio_channel(settings, "product") for _ in range(4)]
    metadata = bearer(mint_token(settings, subject="bench", roles=["auditor"]))
    rng = random.Random(11)
    hot = [code(rng.randrange(rows)) for _ in range(5_000)]

    def get(pick: object) -> object:
        def make(channel: grpc.aio.Channel) -> object:
            call = unary(channel, "/bmc.product.v1.ProductService/GetProduct", product_service_pb2.GetProductRequest)
            return lambda: call(product_service_pb2.GetProductRequest(name=pick()), metadata=metadata, timeout=10)  # type: ignore[operator]

        return make

    def batch(pick: object) -> object:
        def make(channel: grpc.aio.Channel) -> object:
            call = unary(
                channel, "/bmc.product.v1.ProductService/BatchGetProducts", product_service_pb2.BatchGetProductsRequest
            )
            return lambda: call(
                product_service_pb2.BatchGetProductsRequest(names=pick()), metadata=metadata, timeout=10
            )  # type: ignore[operator]

        return make

    def random_code() -> str:
        return code(rng.randrange(rows))

    def hot_code() -> str:
        return rng.choice(hot)

    hot_batches = [hot[i : i + 100] for i in range(0, 1_000, 100)]
    await drive("warm-up (hot set)", batch(lambda: rng.choice(hot_batches)), channels, 8, 2.0)  # type: ignore[arg-type]
    await drive("warm-up (hot set)", get(hot_code), channels, 8, 2.0)  # type: ignore[arg-type]
    results = [
        await drive("health check (no-op) [baseline]", health, channels, concurrency, seconds),  # type: ignore[arg-type]
        await drive("GetProduct, cached (hot set)", get(hot_code), channels, concurrency, seconds),  # type: ignore[arg-type]
        await drive("GetProduct, uncached (random of all)", get(random_code), channels, concurrency, seconds),  # type: ignore[arg-type]
        await drive(
            "BatchGetProducts x100, cached",
            batch(lambda: rng.choice(hot_batches)),
            channels,
            8,
            seconds,  # type: ignore[arg-type]
        ),
        await drive(
            "BatchGetProducts x100, uncached",
            batch(lambda: [random_code() for _ in range(100)]),
            channels,
            8,
            seconds,  # type: ignore[arg-type]
        ),
        # The same call from one caller: the service's own latency, without
        # eight callers queueing for the two cores.
        await drive(
            "BatchGetProducts x100, uncached, 1 caller",
            batch(lambda: [random_code() for _ in range(100)]),
            channels,
            1,
            seconds,  # type: ignore[arg-type]
        ),
    ]
    for channel in channels:
        await channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="product service processes on the port")
    parser.add_argument("--data", type=Path, default=Path("build/bench-data"))
    args = parser.parse_args()
    paths = shards_for(args.rows, args.shards, args.data)
    with platform(["product"], directory=str(args.data), workers=args.workers) as cluster:
        started = time.monotonic()
        with catalog(cluster.settings) as cat:
            loaded = result_of(cat.import_and_wait([str(p) for p in paths], timeout=7200))
        print(
            f"catalog: {loaded.inserted:,} products loaded in {time.monotonic() - started:.0f}s; "
            f"{args.workers} service process(es)",
            flush=True,
        )
        results = asyncio.run(measure(cluster.settings, args.rows, args.seconds, args.concurrency))
    print(summary(results))


if __name__ == "__main__":
    main()
