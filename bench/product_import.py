"""Catalog import throughput against a raw `COPY` of the same files.

Generates a synthetic export (CSV shards), starts a product service on the
embedded PostgreSQL, then in the same run:
  1. baseline: `COPY ... FROM STDIN (FORMAT csv)` of every shard into a plain
     table without indexes;
  2. `ImportProducts` of the same shards through gRPC (validation, staging,
     merge, indexes), sampling the service's RSS;
  3. the same import again (idempotent: everything unchanged).

    .venv/bin/python -m bench.product_import --rows 1000000 10000000 --shards 10
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

import asyncpg
import psutil
from google.longrunning import operations_pb2

from bench.harness import platform
from bmc.product.v1 import product_pb2, product_service_pb2
from services.kit.database import asyncpg_kwargs, database_name, service_url
from services.kit.settings import Settings
from services.product.synth import COLUMNS, write_shards
from tests.integration.product_helpers import catalog, result_of

TARGET_ROWS = 60_000_000


def shards_for(rows: int, count: int, root: Path) -> list[Path]:
    directory = root / f"catalog-{rows}-{count}"
    marker = directory / ".complete"
    if not marker.exists():
        print(f"generating {rows:,} rows in {count} CSV shards under {directory} ...", flush=True)
        started = time.monotonic()
        write_shards(directory, rows, "csv", count)
        marker.touch()
        print(f"  generated in {time.monotonic() - started:.0f}s", flush=True)
    return sorted(directory.resolve().glob("*.csv"))


async def raw_copy(settings: Settings, database_url: str, paths: list[Path]) -> float:
    url = service_url(database_url, database_name(settings, "product"))
    connection = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        columns = ", ".join(f"{c} text" for c in COLUMNS)
        await connection.execute(f"DROP TABLE IF EXISTS raw_copy; CREATE TABLE raw_copy ({columns})")
        started = time.perf_counter()
        for path in paths:
            with path.open("rb") as handle:
                await connection.copy_to_table("raw_copy", source=handle, format="csv", header=True)
        elapsed = time.perf_counter() - started
        await connection.execute("DROP TABLE raw_copy")
        return elapsed
    finally:
        await connection.close()


async def storage(settings: Settings, database_url: str, rows: int) -> list[str]:
    """What the catalog takes on disk, per row and at 60M rows (the RDS sizing in infra/terraform/README.md)."""
    url = service_url(database_url, database_name(settings, "product"))
    connection = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await connection.execute("VACUUM ANALYZE products")
        heap, indexes, total, database = await connection.fetchrow(
            "SELECT pg_relation_size('products') + COALESCE(pg_relation_size(reltoastrelid), 0),"
            " pg_indexes_size('products'), pg_total_relation_size('products'), pg_database_size(current_database())"
            " FROM pg_class WHERE oid = 'products'::regclass"
        )
    finally:
        await connection.close()
    scale = TARGET_ROWS / rows
    return [
        f"  on disk: table {heap / rows:,.0f} B/row, indexes {indexes / rows:,.0f} B/row, "
        f"total {total / rows:,.0f} B/row; whole database {database / 2**30:,.2f} GiB",
        f"  at 60M rows: table {heap * scale / 2**30:,.1f} GiB, indexes {indexes * scale / 2**30:,.1f} GiB, "
        f"total {total * scale / 2**30:,.1f} GiB",
    ]


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        """Peak RSS of the service and its reader process together."""
        while not self.stop.wait(0.25):
            try:
                family = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in family))
            except psutil.NoSuchProcess:
                continue


def timed_import(
    settings: Settings, paths: list[Path], pid: int
) -> tuple[float, product_pb2.ImportProductsResponse, int, dict[str, float]]:
    """Seconds, result, peak RSS, and seconds spent in each stage (from polling its metadata)."""
    sampler = RssSampler(pid)
    sampler.start()
    started = time.perf_counter()
    stages: dict[str, float] = {}
    with catalog(settings) as cat:
        operation = cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(p) for p in paths]))
        meta = product_pb2.ImportProductsMetadata()
        last, mark = "queued", started
        while not operation.done:
            time.sleep(0.1)
            operation = cat.GetOperation(operations_pb2.GetOperationRequest(name=operation.name))
            operation.metadata.Unpack(meta)
            stage = "loading" if meta.progress.stage.startswith("loading") else meta.progress.stage
            if stage != last or operation.done:
                now = time.perf_counter()
                stages[last] = stages.get(last, 0.0) + now - mark
                last, mark = stage, now
        result = result_of(operation)
    elapsed = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    return elapsed, result, sampler.peak, stages


def _stages(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items() if seconds >= 0.05)


def run(rows: int, shard_count: int, root: Path) -> list[str]:
    paths = shards_for(rows, shard_count, root)
    size = sum(p.stat().st_size for p in paths)
    lines = [f"{rows:,} rows, {shard_count} CSV shards, {size / 1e9:.2f} GB"]
    with platform(["product"], directory=str(root), import_roots=str(root.resolve())) as cluster:
        settings = cluster.settings
        assert cluster.infrastructure is not None
        copy_seconds = asyncio.run(raw_copy(settings, cluster.infrastructure.database_url, paths))
        pid = cluster.processes["product"][0].pid
        first_seconds, first, peak_first, first_stages = timed_import(settings, paths, pid)
        again_seconds, again, peak_again, again_stages = timed_import(settings, paths, pid)
        on_disk = asyncio.run(storage(settings, cluster.infrastructure.database_url, rows))
    copy_rate, first_rate, again_rate = rows / copy_seconds, rows / first_seconds, rows / again_seconds
    lines += [
        f"  raw COPY (baseline)        {copy_seconds:8.1f} s  {copy_rate:10,.0f} rows/s   1.00x",
        f"  ImportProducts (new)       {first_seconds:8.1f} s  {first_rate:10,.0f} rows/s  "
        f"{first_rate / copy_rate:5.2f}x  peak RSS {peak_first / 2**20:,.0f} MiB  inserted {first.inserted:,}",
        f"  ImportProducts (unchanged) {again_seconds:8.1f} s  {again_rate:10,.0f} rows/s  "
        f"{again_rate / copy_rate:5.2f}x  peak RSS {peak_again / 2**20:,.0f} MiB  unchanged {again.unchanged:,}",
        f"  stages (new): {_stages(first_stages)}",
        f"  stages (unchanged): {_stages(again_stages)}",
        f"  60M rows at this rate: {TARGET_ROWS / first_rate / 60:.1f} min (new), "
        f"{TARGET_ROWS / again_rate / 60:.1f} min (re-import)",
        *on_disk,
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--data", type=Path, default=Path("build/bench-data"))
    args = parser.parse_args()
    for rows in args.rows:
        for line in run(rows, args.shards, args.data):
            print(line, flush=True)


if __name__ == "__main__":
    main()
