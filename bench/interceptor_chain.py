"""What the server interceptor chain alone costs an RPC, with telemetry off,
on as deployed and recording every trace: CPU per RPC, in one process.

The chain each service builds (`services.kit.server.interceptors`) runs as
gRPC runs it (each interceptor's `intercept_service` in turn, then the
wrapped handler, each RPC in a task of its own) around a handler that does
nothing. No network and no gRPC core: what is measured is the Python the
chain adds, which the end-to-end benchmarks (`bench.telemetry_overhead`,
`bench.kit_overhead`) see only through the noise of everything else. The
servicer context is a stand-in holding what the interceptors read of a
real one (metadata, peer, status code, deadline); it is named as such.
Each RPC's log line is formatted as a service formats it, and written to
/dev/null.

    .venv/bin/python -m bench.interceptor_chain [--rpcs 10000] [--rounds 5]

Each setting's figure is its best round (the least disturbed by the
machine's other load); the ratios are against telemetry off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import uvloop

from bmc.product.v1 import product_pb2, product_service_pb2
from services.kit.clients import bearer
from services.kit.server import interceptors
from services.kit.settings import Settings
from services.kit.telemetry import configure_logging, configure_tracing
from services.kit.tokens import mint_token
from tests.conftest import make_settings

METHOD = "/bmc.product.v1.ProductService/GetProduct"


class _Metadatum(NamedTuple):  # what gRPC hands interceptors: items with .key and .value
    key: str
    value: str


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[_Metadatum, ...]


class StandInContext:
    """A stand-in for `grpc.aio.ServicerContext`: what the interceptors read."""

    def __init__(self, metadata: tuple[_Metadatum, ...]) -> None:
        self._metadata, self._code = metadata, None

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def code(self) -> Any:
        return self._code

    def set_code(self, code: Any) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        pass

    def time_remaining(self) -> float:
        return 10.0

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"aborted: {code} {details}")

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"aborted: {status}")


async def _through(chain: list[grpc.aio.ServerInterceptor], handler: Any, details: _Details) -> Any:
    """The handler gRPC would run: each interceptor's `intercept_service` in turn."""
    remaining: Iterator[grpc.aio.ServerInterceptor] = iter(chain)

    async def step(current: _Details) -> Any:
        interceptor = next(remaining, None)
        if interceptor is None:
            return handler
        return await interceptor.intercept_service(functools.partial(step), current)  # type: ignore[arg-type]

    return await step(details)


def _rpc(settings: Settings, chain: list[grpc.aio.ServerInterceptor]) -> Callable[[], Awaitable[None]]:
    token = bearer(mint_token(settings, subject="bench", roles=["broker"], tenant="bench"))
    metadata = tuple(_Metadatum(k, v) for k, v in (*token, ("user-agent", "grpc-python-asyncio")))
    request = product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO")

    async def get_product(request: product_service_pb2.GetProductRequest, context: Any) -> product_pb2.Product:
        return product_pb2.Product(name=request.name)

    handler = grpc.unary_unary_rpc_method_handler(get_product)

    async def rpc() -> None:
        wrapped = await _through(chain, handler, _Details(METHOD, metadata))
        answer = await wrapped.unary_unary(request, StandInContext(metadata))
        assert answer.name == request.name, answer

    return rpc


async def _cpu_per_rpc(rpc: Callable[[], Awaitable[None]], rpcs: int) -> float:
    """Microseconds of this process's CPU per RPC, 100 RPCs in flight at a time."""
    started = time.process_time()
    for _ in range(rpcs // 100):
        await asyncio.gather(*(asyncio.create_task(rpc()) for _ in range(100)))
    return (time.process_time() - started) / rpcs * 1e6


async def measure(rpcs_of: dict[str, Callable[[], Awaitable[None]]], rpcs: int, rounds: int) -> dict[str, float]:
    """Each setting's best round, in µs of CPU per RPC."""
    best = dict.fromkeys(rpcs_of, float("inf"))
    for rpc in rpcs_of.values():
        await _cpu_per_rpc(rpc, 2000)  # warm-up: handlers wrapped, series created
    for _ in range(rounds):
        for title, rpc in rpcs_of.items():
            best[title] = min(best[title], await _cpu_per_rpc(rpc, rpcs))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpcs", type=int, default=10_000, help="per setting in each round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bmc-bench-") as tmp, open(os.devnull, "w") as devnull:
        base = make_settings(Path(tmp), "embedded", mesh=False)
        deployed = base.trace_sample_ratio
        settings = {
            "telemetry off": base.model_copy(update={"telemetry": False}),
            f"telemetry on, {deployed:.0%} of traces recorded (as deployed)": base,
            "telemetry on, every trace recorded (no exporter)": base.model_copy(update={"trace_sample_ratio": 1.0}),
        }
        with contextlib.redirect_stderr(devnull):  # where the log lines go
            configure_logging(base.model_copy(update={"log_format": "json"}), "product")
        configure_tracing(base, "product")
        best = uvloop.run(measure({t: _rpc(s, interceptors(s)) for t, s in settings.items()}, args.rpcs, args.rounds))
    off = best["telemetry off"]
    for title, micros in best.items():
        print(f"{title:<56} {micros:7.1f} µs CPU an RPC   {off / micros:5.2f} on/off")


if __name__ == "__main__":
    main()
