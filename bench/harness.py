"""Load driving shared by the benchmarks: closed-loop concurrent callers on
several channels (SO_REUSEPORT balances per connection), latency percentiles,
and a platform started just for the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.cli.cluster import Cluster
from tests.conftest import make_settings


@dataclass
class Result:
    name: str
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")

    def row(self, baseline: Result | None = None) -> str:
        ratio = f"{self.rate / baseline.rate:6.2f}x" if baseline else "   1.00x"
        return (
            f"{self.name:<44} {self.rate:9.0f}/s  p50 {self.percentile(0.5):7.2f} ms  "
            f"p99 {self.percentile(0.99):7.2f} ms  errors {self.errors:<5} {ratio}"
        )


async def drive(
    name: str,
    make_call: Callable[[grpc.aio.Channel], Callable[[], Awaitable[object]]],
    channels: list[grpc.aio.Channel],
    concurrency: int,
    seconds: float,
    expected_codes: tuple[grpc.StatusCode, ...] = (),
) -> Result:
    """Runs `concurrency` callers for `seconds`; an RpcError with an expected code counts as a success."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal errors
        call = make_call(channels[index % len(channels)])
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in expected_codes:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


@contextmanager
def platform(services: list[str], gateway: bool = False, **overrides: object) -> Iterator[Cluster]:
    """The named services (and the REST gateway) on a fresh embedded PostgreSQL/Redis, for one run."""
    with TemporaryDirectory(prefix="bmc-bench-", dir=overrides.pop("directory", None)) as tmp:  # type: ignore[arg-type]
        # The services' own cost, without the mesh, unless asked (bench.mesh measures the mesh's).
        settings = make_settings(Path(tmp), "embedded", log_level="WARNING", **{"mesh": False, **overrides})
        with Cluster(settings, services=services, gateway=gateway) as cluster:
            yield cluster


def summary(results: list[Result]) -> str:
    baseline = results[0]
    return "\n".join(r.row(None if r is baseline else baseline) for r in results)


def unary(
    channel: grpc.aio.Channel, method: str, request_type: type[Any]
) -> grpc.aio.UnaryUnaryMultiCallable[Any, bytes]:
    """A raw unary call (responses stay bytes: the client does no parsing work)."""
    return channel.unary_unary(
        method, request_serializer=request_type.SerializeToString, response_deserializer=lambda b: b
    )


def health(channel: grpc.aio.Channel) -> Callable[[], Awaitable[object]]:
    """The no-op baseline: `grpc.health.v1.Health/Check`, which no kit interceptor touches."""
    check = unary(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest)
    return lambda: check(health_pb2.HealthCheckRequest(), timeout=10)
