"""Commission figures: quote throughput in-process and over gRPC, and the
settlement of a period of 1,000,000 registered invoices.

Quotes — baseline `grpc.health.v1.Health/Check` on the same server, in the
same run; then `QuoteCommission` over gRPC (lines by category, no catalog
lookup), and the pure domain computation in this process.

Settlement — 1,000,000 ledger entries (20 brokers, 5,000 buyers, 4
categories, 1% reversed) are written with one `INSERT ... SELECT
generate_series` into the commission database; baseline: a raw scan that
sums the period (`SELECT count(*), sum(total)`), then `RunSettlement` end to
end (operation created, SQL aggregation, stored, polled to done), peak RSS of
the service process, a re-run (identical content hash) and the CSV export of
one broker (50,000 entries).

    .venv/bin/python -m bench.commission [--seconds 5] [--concurrency 50] [--invoices 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import threading
import time
from decimal import Decimal

import asyncpg
import grpc
import psutil

from bench.harness import drive, health, platform, summary, unary
from bmc.commission.v1 import commission_pb2, commission_service_pb2, commission_service_pb2_grpc
from services.cli.cluster import Cluster
from services.commission import reference
from services.commission.domain import OperationLine, TariffBook
from services.kit.clients import aio_channel, bearer
from services.kit.database import asyncpg_kwargs, database_name, service_url
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from tests.integration.clients import Client

PERIOD = "2026-10"
QUOTE = commission_service_pb2.QuoteCommissionRequest(
    lines=[
        commission_pb2.QuoteLine(product_category="CATEGORY_AGRICULTURAL", amount="84000000.00", withholding_class=1),
        commission_pb2.QuoteLine(product_category="CATEGORY_LIVESTOCK", amount="16000000.00", withholding_class=1),
    ],
    date={"year": 2026, "month": 10, "day": 15},
)


def in_process_quotes(seconds: float) -> tuple[float, int]:
    schedules = [s.schedule for s in reference.schedules()]
    book = TariffBook(schedules, {u.year: u.value for u in reference.uvt_values()}, reference.withholding_rules())
    lines = [
        OperationLine(Decimal("84000000.00"), "CATEGORY_AGRICULTURAL", "WITHHOLDING_CLASS_UNPROCESSED"),
        OperationLine(Decimal("16000000.00"), "CATEGORY_LIVESTOCK", "WITHHOLDING_CLASS_UNPROCESSED"),
    ]
    on, count, stop = dt.date(2026, 10, 15), 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < stop:
        for _ in range(100):
            book.price(lines, on)
        count += 100
    return count / (time.perf_counter() - started), count


async def quotes(settings: Settings, seconds: float, concurrency: int) -> str:
    channels = [aio_channel(settings, "commission") for _ in range(4)]
    token = bearer(mint_token(settings, subject="bench", roles=["operator"]))

    def quote(channel: grpc.aio.Channel) -> object:
        call = unary(
            channel,
            "/bmc.commission.v1.CommissionService/QuoteCommission",
            commission_service_pb2.QuoteCommissionRequest,
        )
        return lambda: call(QUOTE, metadata=token, timeout=10)

    await drive("warm-up", health, channels, concurrency, 1.0)  # type: ignore[arg-type]
    results = [
        await drive("health check (no interceptors) [baseline]", health, channels, concurrency, seconds),  # type: ignore[arg-type]
        await drive("QuoteCommission over gRPC", quote, channels, concurrency, seconds),  # type: ignore[arg-type]
    ]
    for channel in channels:
        await channel.close()
    rate, _ = in_process_quotes(seconds)
    return (
        summary(results)
        + f"\n{'TariffBook.price in process (1 core)':<44} {rate:9.0f}/s  {rate / results[0].rate:6.2f}x"
    )


FILL = """
INSERT INTO ledger
SELECT g, md5(g::text), CASE WHEN g % 100 = 0 THEN 'REVERSAL' ELSE 'CHARGE' END, $1, $1,
       'brokers/b' || (g % 20), (800000000 + g % 5000)::text,
       (ARRAY['CATEGORY_AGRICULTURAL','CATEGORY_LIVESTOCK','CATEGORY_FISHING','CATEGORY_AGROINDUSTRIAL'])[1 + g % 4],
       CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END,
       (CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END) * (1000000 + (g * 7919) % 90000000)::numeric(20, 2),
       (CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END) * (26187 + g % 50000),
       (CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END) * round((26187 + g % 50000) * 0.19),
       (CASE WHEN g % 100 = 0 THEN -1 ELSE 1 END) * ((26187 + g % 50000) + round((26187 + g % 50000) * 0.19)),
       'example-2026', gen_random_uuid()::text
FROM generate_series($2::bigint + 1, $2::bigint + $3) AS g
"""


async def fill(settings: Settings, server_url: str, count: int) -> tuple[float, float]:
    """Writes `count` entries; (seconds to write, seconds of the baseline scan)."""
    conn = await asyncpg.connect(**asyncpg_kwargs(service_url(server_url, database_name(settings, "commission"))))
    try:
        started = time.perf_counter()
        head = int(await conn.fetchval("SELECT ledger FROM heads WHERE id = 1"))
        await conn.execute(FILL, PERIOD, head, count)
        await conn.execute("UPDATE heads SET ledger = $1 WHERE id = 1", head + count)
        await conn.execute("VACUUM ANALYZE ledger")
        written = time.perf_counter() - started
        started = time.perf_counter()
        await conn.fetchrow("SELECT count(*), sum(total) FROM ledger WHERE period = $1", PERIOD)
        return written, time.perf_counter() - started
    finally:
        await conn.close()


def settle(cluster: Cluster, invoices: int) -> str:
    assert cluster.infrastructure is not None
    written, scan = asyncio.run(fill(cluster.settings, cluster.infrastructure.database_url, invoices))
    service = psutil.Process(cluster.processes["commission"][0].pid)
    peak, done = service.memory_info().rss, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, service.memory_info().rss)
            time.sleep(0.05)

    client = Client(cluster.settings, "commission", commission_service_pb2_grpc.CommissionServiceStub, "operator")
    rss_before = service.memory_info().rss
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    timings, hashes = [], []
    for _ in range(2):
        started = time.perf_counter()
        operation = client.wait(
            client.RunSettlement(commission_service_pb2.RunSettlementRequest(period=PERIOD)).name, 600
        )
        timings.append(time.perf_counter() - started)
        settlement = commission_pb2.Settlement()
        operation.response.Unpack(settlement)
        hashes.append(settlement.content_hash)
    broker = client.wait(
        client.RunSettlement(commission_service_pb2.RunSettlementRequest(period=PERIOD, broker="brokers/b7")).name, 600
    )
    one = commission_pb2.Settlement()
    broker.response.Unpack(one)
    started = time.perf_counter()
    export = client.ExportSettlement(commission_service_pb2.ExportSettlementRequest(name=one.name), timeout=600)
    exported = time.perf_counter() - started
    done.set()
    watcher.join()
    client.close()
    lines = export.data.count(b"\n") - 1
    return "\n".join(
        [
            f"ledger entries written ({invoices:,}, one INSERT ... SELECT): {written:6.1f} s",
            f"raw scan summing the period [baseline]:        {scan:6.2f} s   1.00x",
            f"RunSettlement, all brokers (end to end):        {timings[0]:6.2f} s   {timings[0] / scan:5.1f}x the scan",
            f"re-run:                                         {timings[1]:6.2f} s   same hash: {len(set(hashes)) == 1}",
            f"  {len(settlement.by_broker)} brokers, {len(settlement.by_buyer):,} buyers, "
            f"{len(settlement.by_category)} categories; total {settlement.total.total} COP over "
            f"{settlement.total.invoice_count:,} net invoices",
            f"CSV export of one broker ({lines:,} entries, {len(export.data) / 2**20:.1f} MiB): {exported:6.2f} s",
            f"commission service RSS: {rss_before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--skip-quotes", action="store_true")
    args = parser.parse_args()
    with platform(["product", "commission"]) as cluster:
        if not args.skip_quotes:
            print(asyncio.run(quotes(cluster.settings, args.seconds, args.concurrency)))
        print(settle(cluster, args.invoices))


if __name__ == "__main__":
    main()
