"""Bulk import of catalog exports as a long-running operation.

Files are read only from the configured import roots (`BMC_IMPORT_ROOTS`:
the local inbox under the data directory by default), never from anywhere
else on the service's host. Each file is read as a stream and cut into
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
import glob
import os
from pathlib import Path

import structlog
from google.longrunning import operations_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from services.kit.database import Database
from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.operations import Job, OperationRunner, OperationStore
from services.product.cache import ProductCache
from services.product.parsing import ChunkReader, FileEnd
from services.product.readers import FileFormatError, SourceFile
from services.product.store import FILE_DONE, Counts, ImportStore

log = structlog.get_logger("bmc.product.import")

KIND = "import-products"
FIRST_LOAD, BULK, MERGE = "first load", "bulk", "merge"
BYTES_PER_ROW = {"": 150, ".gz": 30, ".parquet": 50}
REMOTE_SCHEMES = ("s3://", "gs://")
ImportJob = Job[product_service_pb2.ImportProductsRequest, product_pb2.ImportProductsMetadata]


def estimated_rows(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        suffix = path.suffix if path.suffix in BYTES_PER_ROW else ""
        total += path.stat().st_size // BYTES_PER_ROW[suffix]
    return total


class ImportRoots:
    """Where imports may read: local directories (a path is taken relative to
    the first, and must lie inside one once symbolic links are followed)."""

    def __init__(self, roots: list[Path]) -> None:
        self.local = [root.resolve() for root in roots]

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.local)

    def expand(self, uris: list[str]) -> list[Path]:
        """Files named by `uris` (globs expanded, in a stable order), or
        INVALID_ARGUMENT naming each URI that is outside the roots or matches nothing."""
        paths: list[Path] = []
        violations: list[FieldViolation] = []
        for index, uri in enumerate(uris):
            field = f"uris[{index}]"
            if uri.startswith(REMOTE_SCHEMES):
                violations.append(FieldViolation(field, "reading cloud buckets is not enabled here", "UNSUPPORTED_URI"))
                continue
            pattern = os.path.normpath(self.local[0] / uri.removeprefix("file://"))  # an absolute uri stays itself
            if not self._inside(Path(pattern)):
                violations.append(FieldViolation(field, "outside the import directories", "OUTSIDE_IMPORT_ROOTS"))
                continue
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            # Resolved again: a link inside a root may point anywhere.
            files = [f for f in (Path(m).resolve() for m in matches) if self._inside(f) and f.is_file()]
            if not files:
                violations.append(FieldViolation(field, "no readable file there", "FILE_NOT_FOUND"))
            paths.extend(files)
        if violations:
            raise InvalidArgument("some import files cannot be read", reason="BAD_IMPORT_SOURCE", violations=violations)
        return paths


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
        paths = self._roots.expand(list(request.uris))
        stored = product_service_pb2.ImportProductsRequest(
            uris=[str(p) for p in paths], format=request.format, request_id=request.request_id
        )
        meta = product_pb2.ImportProductsMetadata(uris=stored.uris, bytes_total=sum(p.stat().st_size for p in paths))
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
        mode = await self._mode(store, [Path(u) for u in job.request.uris])
        try:
            await self._load(store, job, mode)
        except FileFormatError as exc:
            raise InvalidArgument(str(exc), reason="UNREADABLE_FILE") from exc
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

    async def _mode(self, store: ImportStore, paths: list[Path]) -> str:
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
        rows = estimated_rows(paths)
        if rows >= self._bulk_rows and rows >= await store.catalog_rows() // 4:
            log.info("bulk mode: secondary indexes go once chunks rewrite most rows", estimated_rows=rows)
            return BULK
        await store.unlock_bulk()
        return MERGE

    async def _load(self, store: ImportStore, job: ImportJob, mode: str) -> Counts:
        """Loads every file not yet committed. A bulk merge drops the
        secondary indexes at the first chunk that rewrites most of its rows:
        re-importing an unchanged export writes nothing, and keeps them."""
        first, drop_pending = mode == FIRST_LOAD, mode == BULK
        done, totals = await store.committed()
        sources = [SourceFile(Path(uri), job.request.format) for uri in job.request.uris]
        actor = job.subject or "import"
        pending = []
        for file_index, source in enumerate(sources):
            if FILE_DONE in done.get(file_index, set()):
                totals.bytes_done += source.size
            else:
                pending.append((file_index, source.path, done.get(file_index, set())))
        reader = ChunkReader(pending, job.request.format, self._chunk_rows, with_line=not first)
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
                    f"loading {sources[item.file_index].path.name}",
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


def _progress(meta: product_pb2.ImportProductsMetadata, totals: Counts, bytes_read: int) -> None:
    meta.progress.done = totals.rows_read
    meta.progress.rejected = totals.rejected
    meta.bytes_read = bytes_read
    meta.inserted, meta.updated, meta.unchanged = totals.inserted, totals.updated, totals.unchanged
