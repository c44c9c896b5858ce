"""Bulk import of catalog exports as a long-running operation.

Each file is read as a stream and cut into chunks of about
`BMC_IMPORT_CHUNK_ROWS` input rows, checked by a reader process (`parsing`).
A chunk is committed in one transaction that also records the chunk, its
rejects and the operation's progress: `COPY`ed into a temporary staging table
and merged into `products`, or, in a first load of an empty catalog,
`COPY`ed into the table that will replace it (`first_load`). So an import is:
- idempotent: the merge changes only rows whose content differs;
- resumable: a killed import restarts after its last committed chunk;
- flat in memory: one chunk at a time, checked while the previous one is written.
"""

from __future__ import annotations

import asyncio
import csv
import glob
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from bmc.common.v1 import operation_pb2
from bmc.product.v1 import product_pb2, product_service_pb2
from services.kit.background import BackgroundTasks
from services.kit.database import asyncpg_kwargs
from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.operations import OperationStore
from services.product import first_load
from services.product.cache import ProductCache
from services.product.domain import DATA_FIELDS
from services.product.parsing import Chunk, ChunkReader, FileEnd
from services.product.readers import FileFormatError, SourceFile
from services.product.store import secondary_indexes

log = structlog.get_logger("bmc.product.import")

KIND = "import-products"
FILE_DONE = -1  # chunk_index marking a whole file as committed
STAGING_COLUMNS = ("line", *DATA_FIELDS, "eligible")
TEXT_COLUMNS = ("code", "display_name", "description", "subcategory", "unit_code")
_COMPARED = [c for c in (*DATA_FIELDS, "eligible") if c != "code"]

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS import_staging (
    line bigint, code text COLLATE "C", display_name text, category smallint,
    processing_level smallint, description text, subcategory text, unit_code text,
    vat_treatment smallint, withholding_class smallint, eligible boolean
) ON COMMIT DELETE ROWS
"""
_current = ", ".join(f"p.{c}" for c in _COMPARED)
_existing = ", ".join(f"products.{c}" for c in _COMPARED)
_staged = ", ".join(f"s.{c}" for c in _COMPARED)
_excluded = ", ".join(f"EXCLUDED.{c}" for c in _COMPARED)
# Built from the fixed column list above, never from input. Rows equal to
# the catalog's are filtered out by a read before the upsert: `ON CONFLICT DO
# UPDATE ... WHERE` would lock (and so write) every row it compares, which
# made re-importing an unchanged export rewrite the whole table.
MERGE_SQL = f"""
WITH staged AS (
    SELECT DISTINCT ON (code) * FROM import_staging ORDER BY code, line DESC
), changed AS (
    SELECT s.*, p.code IS NOT NULL AS known FROM staged s LEFT JOIN products p USING (code)
    WHERE p.code IS NULL OR ({_current}) IS DISTINCT FROM ({_staged})
), names AS (
    INSERT INTO product_names SELECT DISTINCT display_name FROM changed ON CONFLICT DO NOTHING
), history AS (
    INSERT INTO product_history
    SELECT p.* FROM products p JOIN changed s USING (code) WHERE s.known
), merged AS (
    INSERT INTO products (code, {", ".join(_COMPARED)}, active, revision, change, actor, create_time, update_time)
    SELECT code, {", ".join(_COMPARED)}, true, 1, $1, $2, now(), now() FROM changed
    ON CONFLICT (code) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _COMPARED)},
        revision = products.revision + 1, change = EXCLUDED.change, actor = EXCLUDED.actor, update_time = now()
    WHERE ({_existing}) IS DISTINCT FROM ({_excluded})
    RETURNING code, (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated,
       coalesce(array_agg(code) FILTER (WHERE NOT inserted), '{{}}') AS updated_codes
FROM merged
"""  # noqa: S608


# Secondary indexes: a large import into a catalog that is not empty drops
# them (once its chunks turn out to rewrite most of their rows) and rebuilds
# them once at the end (sorted, in parallel), cheaper than maintaining them
# row by row; searches by name or category run unindexed meanwhile.
SECONDARY_INDEXES = secondary_indexes("products")
MAINTENANCE = "SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 2"
BULK_LOCK = 0x62756C6B  # one import at a time may run without indexes
FIRST_LOAD, BULK, MERGE = "first load", "bulk", "merge"
BYTES_PER_ROW = {"": 150, ".gz": 30, ".parquet": 50}


def estimated_rows(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        suffix = path.suffix if path.suffix in BYTES_PER_ROW else ""
        total += path.stat().st_size // BYTES_PER_ROW[suffix]
    return total


async def ensure_secondary_indexes(raw: asyncpg.Connection) -> None:
    await raw.execute(MAINTENANCE)
    for statement in SECONDARY_INDEXES.values():
        await raw.execute(statement)


def expand_uris(uris: list[str]) -> list[Path]:
    """Local paths (`file://` allowed) with globs expanded, in a stable order."""
    paths: list[Path] = []
    violations: list[FieldViolation] = []
    for index, uri in enumerate(uris):
        if uri.startswith("s3://"):
            violations.append(
                FieldViolation(f"uris[{index}]", "s3:// imports run only in AWS deployments", "UNSUPPORTED_URI")
            )
            continue
        pattern = uri.removeprefix("file://")
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            violations.append(FieldViolation(f"uris[{index}]", f"no readable file at {uri!r}", "FILE_NOT_FOUND"))
        paths.extend(p.resolve() for p in files)
    if violations:
        raise InvalidArgument("some import files cannot be read", reason="BAD_IMPORT_SOURCE", violations=violations)
    return paths


@dataclass
class Totals:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    bytes_done: int = 0

    def add(self, other: Totals) -> None:
        for name in ("rows_read", "inserted", "updated", "unchanged", "rejected", "bytes_done"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class ProductImporter:
    """Starts, runs, resumes and reports catalog imports."""

    def __init__(
        self,
        engine: AsyncEngine,
        operations: OperationStore,
        cache: ProductCache,
        report_dir: Path,
        chunk_rows: int,
        bulk_rows: int,
    ) -> None:
        self._engine = engine
        self._chunk_rows = chunk_rows
        self._bulk_rows = bulk_rows
        self._operations = operations
        self._cache = cache
        self._report_dir = report_dir
        self._background = BackgroundTasks()

    def _spawn(self, name: str) -> None:
        self._background.spawn(self.run(name), name)

    async def start(self, request: product_service_pb2.ImportProductsRequest, subject: str) -> operations_pb2.Operation:
        """Checks the files, records the operation and starts it; a repeated
        `request_id` returns the first operation and starts nothing."""
        paths = expand_uris(list(request.uris))
        stored = product_service_pb2.ImportProductsRequest(
            uris=[str(p) for p in paths], format=request.format, request_id=request.request_id
        )
        meta = product_pb2.ImportProductsMetadata(
            uris=stored.uris,
            bytes_total=sum(p.stat().st_size for p in paths),
            progress=operation_pb2.Progress(stage="queued"),
        )
        meta.progress.start_time.GetCurrentTime()
        operation, created = await self._operations.create(
            KIND, stored, meta, request_id=request.request_id, subject=subject
        )
        if created:
            self._spawn(operation.name)
        return operation

    async def resume_unfinished(self) -> list[str]:
        """Restarts imports a crash interrupted; with none left, makes sure no
        interrupted bulk load left the catalog without its search indexes."""
        names = await self._operations.unfinished(KIND)
        if not names:
            raw = await asyncpg.connect(**asyncpg_kwargs(self._engine.url))
            try:
                if await raw.fetchval("SELECT pg_try_advisory_lock($1)", BULK_LOCK):
                    await ensure_secondary_indexes(raw)
            finally:
                await raw.close()
        for name in names:
            self._spawn(name)
        return names

    async def close(self) -> None:
        await self._background.close()

    async def run(self, name: str) -> None:
        record = await self._operations.record(name)
        request = record.unpack_request(product_service_pb2.ImportProductsRequest())
        assert isinstance(request, product_service_pb2.ImportProductsRequest)
        raw = await asyncpg.connect(**asyncpg_kwargs(self._engine.url))
        try:
            lock = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            if not await raw.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                return  # another process of this service runs it
            await raw.execute(STAGING_DDL)
            mode = await self._mode(raw, name, [Path(u) for u in request.uris])
            meta = await self._metadata(name)
            try:
                outcome = await self._load(raw, name, request, record.subject, meta, mode)
            except FileFormatError as exc:
                outcome = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))
            finally:
                if mode != MERGE:
                    # Whatever the outcome, committed chunks are kept: indexed and in place.
                    meta.progress.stage = "indexing"
                    await self._operations.update_metadata(name, meta)
                    if mode == FIRST_LOAD:
                        await self._finish_first_load(raw, name, record.subject)
                    else:
                        await ensure_secondary_indexes(raw)
                    await raw.execute("SELECT pg_advisory_unlock($1)", BULK_LOCK)
            meta.progress.end_time.GetCurrentTime()
            if isinstance(outcome, status_pb2.Status):
                meta.progress.stage = "cancelled" if outcome.code == code_pb2.CANCELLED else "failed"
                await self._operations.finish(name, meta=meta, error=outcome)
            else:
                response = await self._response(raw, name, request, meta)
                await self._operations.finish(name, meta=meta, response=response)
                log.info("import finished", operation=name, rows=response.rows_read, inserted=response.inserted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("import failed", operation=name)
            meta = await self._metadata(name)
            meta.progress.stage = "failed"
            meta.progress.end_time.GetCurrentTime()
            status = status_pb2.Status(
                code=code_pb2.INTERNAL, message=f"import stopped: {type(exc).__name__}; re-run it to continue"
            )
            await self._operations.finish(name, meta=meta, error=status)
        finally:
            await raw.close()

    async def _mode(self, raw: asyncpg.Connection, name: str, paths: list[Path]) -> str:
        """How this import writes: a first load of an empty catalog, a bulk
        merge without secondary indexes (large next to the catalog), or a
        plain merge. The first two hold BULK_LOCK: one at a time."""
        if await first_load.owner(raw) == name:
            await raw.execute("SELECT pg_advisory_lock($1)", BULK_LOCK)  # resuming: only this one may finish it
            return FIRST_LOAD
        if not await raw.fetchval("SELECT pg_try_advisory_lock($1)", BULK_LOCK):
            return MERGE
        if await first_load.claim(raw, name):
            return FIRST_LOAD
        rows = estimated_rows(paths)
        current = await raw.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = 'products'")
        if rows >= self._bulk_rows and rows >= max(current or 0, 0) // 4:
            log.info("bulk mode: secondary indexes go once chunks rewrite most rows", estimated_rows=rows)
            return BULK
        await raw.execute("SELECT pg_advisory_unlock($1)", BULK_LOCK)
        return MERGE

    async def _finish_first_load(self, raw: asyncpg.Connection, name: str, subject: str) -> None:
        await raw.execute(MAINTENANCE)
        dropped = await first_load.duplicates(raw)
        if dropped:
            # A later row of the same code replaced an earlier one: counted as updated, as a merge would.
            await raw.execute(
                "INSERT INTO import_chunks VALUES ($1, -1, 0, 0, $2, $3, 0, 0, 0) ON CONFLICT DO NOTHING",
                name, -dropped, dropped,
            )  # fmt: skip
        await first_load.index(raw, f"import {name}", subject or "import")
        kept = await first_load.swap(raw)
        log.info("first load in place", operation=name, duplicate_rows=dropped, kept_api_writes=kept)
        await self._cache.forget_missing()

    async def _metadata(self, name: str) -> product_pb2.ImportProductsMetadata:
        operation = await self._operations.get(name)
        meta = product_pb2.ImportProductsMetadata()
        operation.metadata.Unpack(meta)
        return meta

    async def _committed(self, raw: asyncpg.Connection, name: str) -> tuple[dict[int, set[int]], Totals]:
        rows = await raw.fetch("SELECT * FROM import_chunks WHERE operation = $1", name)
        done: dict[int, set[int]] = {}
        totals = Totals()
        for r in rows:
            done.setdefault(r["file_index"], set()).add(r["chunk_index"])
            totals.add(Totals(r["rows_read"], r["inserted"], r["updated"], r["unchanged"], r["rejected"], 0))
        return done, totals

    async def _load(
        self,
        raw: asyncpg.Connection,
        name: str,
        request: product_service_pb2.ImportProductsRequest,
        subject: str,
        meta: product_pb2.ImportProductsMetadata,
        mode: str,
    ) -> Totals | status_pb2.Status:
        """Loads every file not yet committed; the totals, or CANCELLED. A
        bulk merge drops the secondary indexes at the first chunk that
        rewrites most of its rows: re-importing an unchanged export writes
        nothing, and keeps them."""
        first, drop_pending = mode == FIRST_LOAD, mode == BULK
        done, totals = await self._committed(raw, name)
        sources = [SourceFile(Path(uri), request.format) for uri in request.uris]
        actor = subject or "import"
        pending = []
        for file_index, source in enumerate(sources):
            if FILE_DONE in done.get(file_index, set()):
                totals.bytes_done += source.size
            else:
                pending.append((file_index, source.path, done.get(file_index, set())))
        reader = ChunkReader(pending, request.format, self._chunk_rows, with_line=not first)
        try:
            while (item := await reader.next()) is not None:
                if isinstance(item, FileEnd):
                    await raw.execute(
                        "INSERT INTO import_chunks VALUES ($1, $2, $3, 0, 0, 0, 0, 0, $4) ON CONFLICT DO NOTHING",
                        name, item.file_index, FILE_DONE, item.size,
                    )  # fmt: skip
                    totals.bytes_done += item.size
                    continue
                if item.index in done.get(item.file_index, set()):
                    continue
                meta.current_file = item.file_index
                counts = await self._commit(raw, name, item, f"import {name}", actor, first)
                totals.add(counts)
                if drop_pending and counts.inserted + counts.updated > counts.rows_read // 2:
                    log.info("bulk mode: secondary indexes dropped until the import ends", operation=name)
                    await raw.execute(f"DROP INDEX IF EXISTS {', '.join(SECONDARY_INDEXES)}")
                    drop_pending = False
                stage = f"loading {sources[item.file_index].path.name}"
                self._progress(meta, totals, totals.bytes_done + item.bytes_read, stage)
                if await self._operations.update_metadata(name, meta):
                    meta.progress.cancel_requested = True
                    return status_pb2.Status(
                        code=code_pb2.CANCELLED,
                        message="import cancelled; chunks committed before the request are kept",
                    )
        finally:
            reader.close()
        return totals

    async def _response(
        self,
        raw: asyncpg.Connection,
        name: str,
        request: product_service_pb2.ImportProductsRequest,
        meta: product_pb2.ImportProductsMetadata,
    ) -> product_pb2.ImportProductsResponse:
        """The final counts (a first load settles duplicates at the end) and the reject report."""
        _, totals = await self._committed(raw, name)
        self._progress(meta, totals, meta.bytes_total, "done")
        return product_pb2.ImportProductsResponse(
            rows_read=totals.rows_read,
            inserted=totals.inserted,
            updated=totals.updated,
            unchanged=totals.unchanged,
            rejected=totals.rejected,
            reject_report_uri=await self._write_report(raw, name, request),
        )

    def _progress(self, meta: product_pb2.ImportProductsMetadata, totals: Totals, bytes_read: int, stage: str) -> None:
        meta.progress.done = totals.rows_read
        meta.progress.rejected = totals.rejected
        meta.progress.stage = stage
        meta.progress.update_time.GetCurrentTime()
        meta.bytes_read = bytes_read
        meta.inserted, meta.updated, meta.unchanged = totals.inserted, totals.updated, totals.unchanged

    async def _commit(
        self, raw: asyncpg.Connection, name: str, chunk: Chunk, change: str, actor: str, first: bool
    ) -> Totals:
        async with raw.transaction():
            inserted = updated = 0
            updated_codes: list[str] = []
            if chunk.valid:
                table, columns = (
                    (first_load.TABLE, first_load.COPY_COLUMNS) if first else ("import_staging", STAGING_COLUMNS)
                )
                await raw.copy_to_table(
                    table,
                    source=io.BytesIO(chunk.csv),
                    columns=columns,
                    format="csv",
                    force_not_null=TEXT_COLUMNS,  # an empty field is '', not NULL
                )
                if first:
                    inserted = chunk.valid  # duplicates are settled once, at the end
                else:
                    merged = await raw.fetchrow(MERGE_SQL, change, actor)
                    assert merged is not None
                    inserted, updated = merged["inserted"], merged["updated"]
                    updated_codes = list(merged["updated_codes"])
            if chunk.rejects:
                await raw.executemany(
                    "INSERT INTO import_rejects VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    [(name, chunk.file_index, r.line, r.field, r.reason, r.message, r.raw) for r in chunk.rejects],
                )
            counts = Totals(
                rows_read=chunk.rows,
                inserted=inserted,
                updated=updated,
                unchanged=chunk.valid - inserted - updated,
                rejected=len(chunk.rejects),
            )
            await raw.execute(
                "INSERT INTO import_chunks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                name, chunk.file_index, chunk.index, counts.rows_read, counts.inserted, counts.updated,
                counts.unchanged, counts.rejected, chunk.bytes_read,
            )  # fmt: skip
        await self._cache.invalidate(updated_codes)
        if inserted and not first:  # a first load's rows appear only at the swap
            await self._cache.forget_missing()
        return counts

    async def _write_report(
        self, raw: asyncpg.Connection, name: str, request: product_service_pb2.ImportProductsRequest
    ) -> str:
        rows = await raw.fetch("SELECT * FROM import_rejects WHERE operation = $1 ORDER BY file_index, line", name)
        if not rows:
            return ""
        path = self._report_dir / name.replace("/", "-") / "rejects.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "line", "field", "reason", "message", "raw"])
            for r in rows:
                writer.writerow(
                    [request.uris[r["file_index"]], r["line"], r["field"], r["reason"], r["message"], r["raw"]]
                )
        return path.resolve().as_uri()
