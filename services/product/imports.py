"""Bulk import of catalog exports as a long-running operation.

Files are read only from the configured import roots (`BMC_IMPORT_ROOTS`:
the local inbox under the data directory by default; bucket prefixes in
`gs://` and `s3://` too, `locations`), never from anywhere else. Each file is read as a stream and cut into
chunks of about `BMC_IMPORT_CHUNK_ROWS` input rows, checked by a reader
process (`parsing`). A chunk is committed in one transaction that also
records the chunk, its rejects and the operation's progress (`store`). So
an import is:
- idempotent: the merge changes only rows whose content differs;
- resumable: a killed import restarts after its last committed chunk;
- flat in memory: one chunk at a time, checked while the previous one is written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import structlog
from google.longrunning import operations_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from services.kit.database import Database
from services.kit.errors import InvalidArgument, Unavailable
from services.kit.operations import Job, OperationRunner, OperationStore
from services.product.cache import ProductCache
from services.product.locations import Found, ImportRoots
from services.product.parsing import ChunkReader, FileEnd
from services.product.readers import FileFormatError, SourceFile, SourceUnreadable
from services.product.store import FILE_DONE, Counts, ImportStore

log = structlog.get_logger("bmc.product.import")

KIND = "import-products"
FIRST_LOAD, BULK, MERGE = "first load", "bulk", "merge"
BYTES_PER_ROW = {"": 150, ".gz": 30, ".parquet": 50}
ImportJob = Job[product_service_pb2.ImportProductsRequest, product_pb2.ImportProductsMetadata]


def estimated_rows(files: list[Found]) -> int:
    total = 0
    for found in files:
        suffix = PurePosixPath(found.name).suffix
        total += found.size // BYTES_PER_ROW.get(suffix, BYTES_PER_ROW[""])
    return total


class ProductImporter:
    """Starts, runs, resumes and reports catalog imports."""

    def __init__(
        self,
        database: Database,
        operations: OperationStore,
        cache: ProductCache,
        roots: ImportRoots,
        report_dir: Path,
        chunk_rows: int,
        bulk_rows: int,
    ) -> None:
        self._database = database
        self._cache = cache
        self._roots = roots
        self._report_dir = report_dir
        self._chunk_rows = chunk_rows
        self._bulk_rows = bulk_rows
        self.runner = OperationRunner(
            database,
            operations,
            KIND,
            product_service_pb2.ImportProductsRequest,
            product_pb2.ImportProductsMetadata,
            self._run,
        )

    async def start(self, request: product_service_pb2.ImportProductsRequest, subject: str) -> operations_pb2.Operation:
        """Checks the files, records the operation and starts it; a repeated
        `request_id` returns the first operation and starts nothing."""
        files = self._roots.expand(list(request.uris))
        stored = product_service_pb2.ImportProductsRequest(
            uris=[f.uri for f in files], format=request.format, request_id=request.request_id
        )
        meta = product_pb2.ImportProductsMetadata(uris=stored.uris, bytes_total=sum(f.size for f in files))
        return await self.runner.start(request, meta, tenant="", subject=subject, stored=stored)

    async def resume_unfinished(self) -> list[str]:
        """Restarts imports a crash interrupted; with none left, makes sure no
        interrupted bulk load left the catalog without its search indexes."""
        names = await self.runner.resume_unfinished()
        if not names:
            conn = await self._database.connect()
            try:
                store = ImportStore(conn, "")
                if await store.lock_bulk(wait=False):
                    await store.ensure_secondary_indexes()
            finally:
                await conn.close()
        return names

    async def close(self) -> None:
        await self.runner.close()

    async def _run(self, job: ImportJob) -> product_pb2.ImportProductsResponse:
        store = ImportStore(job.connection, job.name)
        await store.prepare()
        with _read_errors():
            sources = [SourceFile(uri, job.request.format, self._roots.buckets) for uri in job.request.uris]
        mode = await self._mode(store, [Found(s.path, s.size) for s in sources])
        try:
            with _read_errors():
                await self._load(store, job, mode, sources)
        finally:
            if mode != MERGE:
                # Whatever the outcome, committed chunks are kept: indexed and in place.
                job.progress.stage = "indexing"
                await job.store.update_metadata(job.name, job.meta)
                if mode == FIRST_LOAD:
                    dropped, kept = await store.finish_first_load(job.subject or "import")
                    log.info("first load in place", operation=job.name, duplicate_rows=dropped, kept_api_writes=kept)
                    await self._cache.forget_missing()
                else:
                    await store.ensure_secondary_indexes()
                await store.unlock_bulk()
        response = await self._response(store, job)
        log.info("import finished", operation=job.name, rows=response.rows_read, inserted=response.inserted)
        return response

    async def _mode(self, store: ImportStore, files: list[Found]) -> str:
        """How this import writes: a first load of an empty catalog, a bulk
        merge without secondary indexes (large next to the catalog), or a
        plain merge. The first two hold the bulk lock: one at a time."""
        if await store.load_owner() == store.operation:
            await store.lock_bulk(wait=True)  # resuming: only this one may finish it
            return FIRST_LOAD
        if not await store.lock_bulk(wait=False):
            return MERGE
        if await store.claim_first_load():
            return FIRST_LOAD
        rows = estimated_rows(files)
        if rows >= self._bulk_rows and rows >= await store.catalog_rows() // 4:
            log.info("bulk mode: secondary indexes go once chunks rewrite most rows", estimated_rows=rows)
            return BULK
        await store.unlock_bulk()
        return MERGE

    async def _load(self, store: ImportStore, job: ImportJob, mode: str, sources: list[SourceFile]) -> Counts:
        """Loads every file not yet committed. A bulk merge drops the
        secondary indexes at the first chunk that rewrites most of its rows:
        re-importing an unchanged export writes nothing, and keeps them."""
        first, drop_pending = mode == FIRST_LOAD, mode == BULK
        done, totals = await store.committed()
        actor = job.subject or "import"
        pending = []
        for file_index, source in enumerate(sources):
            if FILE_DONE in done.get(file_index, set()):
                totals.bytes_done += source.size
            else:
                pending.append((file_index, source.path, done.get(file_index, set())))
        reader = ChunkReader(pending, job.request.format, self._chunk_rows, not first, self._roots.buckets)
        try:
            while (item := await reader.next()) is not None:
                if isinstance(item, FileEnd):
                    await store.file_done(item.file_index, item.size)
                    totals.bytes_done += item.size
                    continue
                if item.index in done.get(item.file_index, set()):
                    continue
                job.meta.current_file = item.file_index
                counts, updated_codes = await store.commit_chunk(item, actor, first)
                await self._cache.invalidate(updated_codes)
                if counts.inserted and not first:  # a first load's rows appear only at the swap
                    await self._cache.forget_missing()
                totals.add(counts)
                if drop_pending and counts.inserted + counts.updated > counts.rows_read // 2:
                    log.info("bulk mode: secondary indexes dropped until the import ends", operation=job.name)
                    await store.drop_secondary_indexes()
                    drop_pending = False
                _progress(job.meta, totals, totals.bytes_done + item.bytes_read)
                await job.report(
                    f"loading {PurePosixPath(sources[item.file_index].path).name}",
                    cancel_message="import cancelled; chunks committed before the request are kept",
                )
        finally:
            reader.close()
        return totals

    async def _response(self, store: ImportStore, job: ImportJob) -> product_pb2.ImportProductsResponse:
        """The final counts (a first load settles duplicates at the end) and the reject report."""
        _, totals = await store.committed()
        _progress(job.meta, totals, job.meta.bytes_total)
        return product_pb2.ImportProductsResponse(
            rows_read=totals.rows_read,
            inserted=totals.inserted,
            updated=totals.updated,
            unchanged=totals.unchanged,
            rejected=totals.rejected,
            reject_report_uri=await self._write_report(store, job),
        )

    async def _write_report(self, store: ImportStore, job: ImportJob) -> str:
        rows = await store.rejects()
        if not rows:
            return ""
        path = self._report_dir / job.name.replace("/", "-") / "rejects.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "line", "field", "reason", "message", "raw"])
            for r in rows:
                writer.writerow(
                    [job.request.uris[r["file_index"]], r["line"], r["field"], r["reason"], r["message"], r["raw"]]
                )
        return path.resolve().as_uri()


@contextmanager
def _read_errors() -> Iterator[None]:
    """A file that is not what it claims fails the import for good; storage
    that failed past its client's retries fails it as UNAVAILABLE (committed
    chunks are kept either way)."""
    try:
        yield
    except FileFormatError as exc:
        raise InvalidArgument(str(exc), reason="UNREADABLE_FILE") from exc
    except (SourceUnreadable, OSError) as exc:
        raise Unavailable(f"cannot read the import files: {exc}", reason="SOURCE_UNREADABLE") from exc


def _progress(meta: product_pb2.ImportProductsMetadata, totals: Counts, bytes_read: int) -> None:
    meta.progress.done = totals.rows_read
    meta.progress.rejected = totals.rejected
    meta.bytes_read = bytes_read
    meta.inserted, meta.updated, meta.unchanged = totals.inserted, totals.updated, totals.unchanged
