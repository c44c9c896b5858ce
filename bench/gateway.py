"""The REST edge against direct gRPC, same RPC, same run.

Starts the product service and the gateway on the embedded databases, loads
the sample catalog, then drives closed-loop callers for each row:
  1. gRPC health check (no-op baseline of the gRPC stack);
  2. gRPC GetProduct, direct;
  3. HTTP GET /healthz on the gateway (no-op baseline of the HTTP stack);
  4. REST GET /v1/products/{code} through the gateway (transcoded GetProduct);
  5. REST POST /v1/products:batchGet of 100 codes, against gRPC BatchGetProducts.

    .venv/bin/python -m bench.gateway --seconds 10 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections.abc import Awaitable, Callable

import aiohttp
import grpc

from bench.harness import Result, drive, health, platform, unary
from bmc.product.v1 import product_service_pb2
from services.cli.cluster import Cluster, gateway_url
from services.kit.clients import aio_channel, bearer
from services.kit.tokens import mint_token
from tests.conftest import ROOT
from tests.integration.invoice_helpers import load_sample_catalog

CODE = "CAFE-PERGAMINO"


async def drive_http(
    name: str, call: Callable[[aiohttp.ClientSession], Awaitable[int]], concurrency: int, seconds: float
) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                if await call(session) != 200:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


async def run(cluster: Cluster, seconds: float, concurrency: int) -> list[Result]:
    settings = cluster.settings
    token = mint_token(settings, subject="bench", roles=["operator"])
    metadata = bearer(token)
    base = gateway_url(settings)
    headers = {"Authorization": f"Bearer {token}"}
    with (ROOT / "samples" / "catalog" / "commodities.csv").open() as handle:
        codes = [row["code"] for _, row in zip(range(100), csv.DictReader(handle), strict=False)]
    batch_body = {"names": [f"products/{c}" for c in codes]}
    channels = [aio_channel(settings, "product") for _ in range(4)]

    def get_product(channel: grpc.aio.Channel) -> Callable[[], Awaitable[object]]:
        call = unary(channel, "/bmc.product.v1.ProductService/GetProduct", product_service_pb2.GetProductRequest)
        request = product_service_pb2.GetProductRequest(name=f"products/{CODE}")
        return lambda: call(request, metadata=metadata, timeout=10)

    def batch_get(channel: grpc.aio.Channel) -> Callable[[], Awaitable[object]]:
        call = unary(
            channel, "/bmc.product.v1.ProductService/BatchGetProducts", product_service_pb2.BatchGetProductsRequest
        )
        request = product_service_pb2.BatchGetProductsRequest(names=batch_body["names"])
        return lambda: call(request, metadata=metadata, timeout=10)

    async def healthz(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{base}/healthz") as response:
            await response.read()
            return response.status

    async def rest_get(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{base}/v1/products/{CODE}", headers=headers) as response:
            await response.read()
            return response.status

    async def rest_batch(session: aiohttp.ClientSession) -> int:
        async with session.post(f"{base}/v1/products:batchGet", json=batch_body, headers=headers) as response:
            await response.read()
            return response.status

    results = [
        await drive("gRPC health check (no-op)", health, channels, concurrency, seconds),
        await drive("gRPC GetProduct", get_product, channels, concurrency, seconds),
        await drive_http("HTTP GET /healthz on the gateway (no-op)", healthz, concurrency, seconds),
        await drive_http("REST GET /v1/products/{code}", rest_get, concurrency, seconds),
        await drive("gRPC BatchGetProducts x100", batch_get, channels, concurrency // 4, seconds),
        await drive_http("REST POST /v1/products:batchGet x100", rest_batch, concurrency // 4, seconds),
    ]
    for channel in channels:
        await channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with platform(["product"], gateway=True) as cluster:
        load_sample_catalog(cluster.settings)
        results = asyncio.run(run(cluster, args.seconds, args.concurrency))
    baseline_grpc, direct, baseline_http, rest, direct_batch, rest_batch = results
    for result, against in (
        (baseline_grpc, None),
        (direct, baseline_grpc),
        (baseline_http, baseline_grpc),
        (rest, direct),
        (direct_batch, None),
        (rest_batch, direct_batch),
    ):
        print(result.row(against), flush=True)
    print("ratios: REST GetProduct / gRPC GetProduct, REST batch / gRPC batch (same run)")


if __name__ == "__main__":
    main()
