"""Invoice registration throughput on real PostgreSQL, next to a no-op RPC.

Starts the product and invoice services (embedded PostgreSQL/Redis), loads
the sample catalog, then in one run: health check (no-op baseline), single
`RegisterInvoice` calls from 50 concurrent clients, `BatchRegisterInvoices`
of 500, and an `ImportInvoices` of a ZIP of UBL files (time, rate, RSS).

    .venv/bin/python -m bench.invoice_registration --seconds 10 --ubl 10000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import zipfile

import asyncpg
import grpc
import psutil
from google.longrunning import operations_pb2

from bench.harness import Result, drive, health, platform, summary
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.dian import calendar
from services.invoice.synth import invoices
from services.kit.clients import aio_channel, bearer
from services.kit.database import asyncpg_kwargs, database_name, service_url
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from tests.integration.invoice_helpers import load_sample_catalog, registry
from tests.integration.test_invoice_import import ubl

TODAY = calendar.today()


def prepared(singles: int = 30_000, batched: int = 60_000) -> tuple[list[bytes], list[bytes]]:
    """Serialized requests: `singles` single registrations, and batches of 500 holding `batched` in all."""
    print("generating invoices...", flush=True)
    generated = list(invoices(singles + batched, TODAY, seed=101, prefix="BNCH"))
    single = [invoice_service_pb2.RegisterInvoiceRequest(invoice=p).SerializeToString() for p in generated[:singles]]
    batches = [
        invoice_service_pb2.BatchRegisterInvoicesRequest(
            requests=[invoice_service_pb2.RegisterInvoiceRequest(invoice=p) for p in generated[i : i + 500]]
        ).SerializeToString()
        for i in range(singles, len(generated), 500)
    ]
    return single, batches


class Load:
    """The registration load on one platform's invoice service: health checks
    (the no-op baseline), single registrations from 50 clients, batches of 500
    from 4. Requests are built and serialized before the clock starts, so the
    load generator (on the same 2 cores) spends almost nothing per call, and
    its channels carry no telemetry of their own."""

    def __init__(self, settings: Settings, requests: tuple[list[bytes], list[bytes]]) -> None:
        quiet = settings.model_copy(update={"telemetry": False})
        self.channels = [aio_channel(quiet, "invoice") for _ in range(4)]
        self._metadata = bearer(mint_token(settings, subject="bench", roles=["broker"], tenant="bench"))
        self._singles, self._batches = iter(requests[0]), iter(requests[1])

    def _raw(self, channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    async def health(self, seconds: float) -> Result:
        return await drive("health check (no-op) [baseline]", health, self.channels, 50, seconds)  # type: ignore[arg-type]

    async def singles(self, seconds: float) -> Result:
        def single(channel: grpc.aio.Channel) -> object:
            call = self._raw(channel, "/bmc.invoice.v1.InvoiceService/RegisterInvoice")
            return lambda: call(next(self._singles), metadata=self._metadata, timeout=30)

        return await drive("RegisterInvoice, 50 clients", single, self.channels, 50, seconds)  # type: ignore[arg-type]

    async def batches(self, seconds: float) -> Result:
        def batch(channel: grpc.aio.Channel) -> object:
            call = self._raw(channel, "/bmc.invoice.v1.InvoiceService/BatchRegisterInvoices")
            return lambda: call(next(self._batches), metadata=self._metadata, timeout=120)

        batched = await drive("BatchRegisterInvoices x500, 4 clients", batch, self.channels, 4, seconds)  # type: ignore[arg-type]
        batched.name = "BatchRegisterInvoices x500 (rate = invoices)"
        batched.calls *= 500
        return batched

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def measure(settings: Settings, seconds: float) -> list[Result]:
    load = Load(settings, prepared())
    results = [await load.health(seconds), await load.singles(seconds), await load.batches(seconds)]
    await load.close()
    return results


def _zip(protos: list[invoice_pb2.Invoice], first: int) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for n, proto in enumerate(protos, start=first):
            z.writestr(f"f{n:06d}.xml", ubl(proto))
    return archive.getvalue()


def ubl_import(settings: Settings, count: int, pid: int, per_file: int = 20_000) -> str:
    """Imports `count` UBL invoices as ZIPs of at most `per_file` files (the
    per-archive limit; uploads stay under 64 MiB)."""
    protos = list(invoices(count, TODAY, seed=977, prefix="UBLX"))
    files = [_zip(protos[i : i + per_file], i) for i in range(0, count, per_file)]
    process = psutil.Process(pid)
    peak, registered, rejected = 0, 0, 0
    with registry(settings, role="operator") as reg:
        started = time.perf_counter()
        for index, content in enumerate(files):
            operation = reg.ImportInvoices(
                invoice_service_pb2.ImportInvoicesRequest(
                    content=content, filename=f"bench-{index}.zip", broker="brokers/bench"
                ),
                timeout=120,
            )
            while not operation.done:
                time.sleep(0.5)
                peak = max(peak, process.memory_info().rss)
                operation = reg.GetOperation(operations_pb2.GetOperationRequest(name=operation.name))
            if operation.HasField("error"):
                raise RuntimeError(f"import {index} failed: {operation.error.message}")
            result = invoice_pb2.ImportInvoicesResponse()
            operation.response.Unpack(result)
            registered, rejected = registered + result.registered, rejected + result.rejected
        elapsed = time.perf_counter() - started
    size = sum(len(f) for f in files)
    return (
        f"ImportInvoices of {count:,} UBL invoices in {len(files)} ZIP(s) ({size / 1e6:.1f} MB): {elapsed:.1f} s, "
        f"{registered / elapsed:,.0f} invoices/s, {registered:,} registered, {rejected} rejected, "
        f"peak RSS {peak / 2**20:,.0f} MiB"
    )


async def stored_bytes(settings: Settings, database_url: str) -> str:
    """What a registration leaves on disk: the invoice database (events, the
    read model, their indexes) over the invoices it holds (RDS sizing)."""
    url = service_url(database_url, database_name(settings, "invoice"))
    connection = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await connection.execute("VACUUM ANALYZE")
        invoices, size = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM invoices), pg_database_size(current_database())"
        )
    finally:
        await connection.close()
    per = size / max(invoices, 1)
    return (
        f"invoice database: {size / 2**20:,.0f} MiB for {invoices:,} invoices = {per / 1024:,.1f} KiB per invoice "
        f"(with the empty database's fixed 8 MiB); a year at 10,000/h: {per * 87_600_000 / 2**30:,.0f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ubl", type=int, default=10_000, help="invoices in the UBL import (0 skips it)")
    parser.add_argument("--workers", type=int, default=1, help="invoice service processes on the port")
    args = parser.parse_args()
    with platform(["product", "invoice"], workers=args.workers) as cluster:
        load_sample_catalog(cluster.settings)
        if args.seconds:
            print(summary(asyncio.run(measure(cluster.settings, args.seconds))), flush=True)
        if args.ubl:
            print(ubl_import(cluster.settings, args.ubl, cluster.processes["invoice"][0].pid))
        assert cluster.infrastructure is not None
        print(asyncio.run(stored_bytes(cluster.settings, cluster.infrastructure.database_url)))


if __name__ == "__main__":
    main()
