"""What the kit's interceptor chain costs per RPC.

Baseline: `grpc.health.v1.Health/Check`, which bypasses the chain. Against
it, in the same run on the same server: a call refused by authentication
(no token), and a call that passes the whole chain — span, log line, JWT
verification, role check, protovalidate — and reaches a handler.

    .venv/bin/python -m bench.kit_overhead [--seconds 5] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from bench.harness import drive, health, platform, summary, unary
from bmc.product.v1 import product_service_pb2
from services.kit.clients import aio_channel, bearer
from services.kit.settings import Settings
from services.kit.tokens import mint_token


async def run(settings: Settings, seconds: float, concurrency: int) -> str:
    channels = [aio_channel(settings, "product") for _ in range(4)]
    token = bearer(mint_token(settings, subject="bench", roles=["auditor"]))
    request = product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO")

    def get(metadata: tuple[tuple[str, str], ...]) -> object:
        def make(channel: grpc.aio.Channel) -> object:
            call = unary(channel, "/bmc.product.v1.ProductService/GetProduct", product_service_pb2.GetProductRequest)
            return lambda: call(request, metadata=metadata, timeout=5)

        return make

    await drive("warm-up", health, channels, concurrency, 1.0)  # type: ignore[arg-type]
    results = [
        await drive("health check (no interceptors) [baseline]", health, channels, concurrency, seconds),  # type: ignore[arg-type]
        await drive(
            "GetProduct, no token (refused at authn)",
            get(()),
            channels,
            concurrency,
            seconds,  # type: ignore[arg-type]
            expected_codes=(grpc.StatusCode.UNAUTHENTICATED,),
        ),
        await drive(
            "GetProduct, full chain to handler",
            get(token),
            channels,
            concurrency,
            seconds,  # type: ignore[arg-type]
            expected_codes=(grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND),
        ),
    ]
    for channel in channels:
        await channel.close()
    return summary(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with platform(["product"]) as cluster:
        print(asyncio.run(run(cluster.settings, args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
