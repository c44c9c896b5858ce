"""Long-running operations (AIP-151) kept in the owning service's database,
and the one runner every service's imports and settlements go through.

An operation is created by `OperationRunner.start`, which scopes its
`request_id` to (kind, tenant, caller) and refuses the key reused with
another request. The runner then runs the service's work function in the
background; the work reports progress through its `Job`, which raises
`OperationCancelled` once a cancellation was requested. A run first
*claims* the operation: a session advisory lock on a dedicated connection,
which PostgreSQL releases when the process dies. So with several worker
processes an unfinished operation is resumed by exactly one of them, and a
crashed worker's operation by whoever looks next (start-up, or the periodic
sweep). The work receives that connection for whatever session state it
needs (temporary tables, settings, further locks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from bmc.common.v1 import operation_pb2
from services.kit.background import BackgroundTasks, cancel
from services.kit.database import Database
from services.kit.errors import NotFound, ServiceError, to_status
from services.kit.idempotency import request_fingerprint, reused
from services.kit.metrics import OPERATION_UNITS, OPERATIONS_FINISHED, OPERATIONS_RUNNING
from services.kit.names import resource_id
from services.kit.paging import INSTANT, TEXT, list_page

log = structlog.get_logger("bmc.operations")

SWEEP_SECONDS = 30.0  # how often a worker looks for operations nobody runs (their worker died)


RequestT = TypeVar("RequestT", bound=Message)
MetaT = TypeVar("MetaT", bound=Message)


def _pack(message: Message | None) -> bytes | None:
    if message is None:
        return None
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed.SerializeToString()


def _unpack(data: bytes | None) -> any_pb2.Any | None:
    return any_pb2.Any.FromString(data) if data else None


def _claim_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class OperationStore:
    """Operations of one service; names are `<collection>/<uuid>`."""

    def __init__(self, pool: asyncpg.Pool, collection: str) -> None:
        self._pool = pool
        self.collection = collection

    @staticmethod
    def _proto(row: asyncpg.Record) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=row["name"], done=row["done"])
        if (meta := _unpack(row["metadata"])) is not None:
            op.metadata.CopyFrom(meta)
        if row["error"]:
            op.error.CopyFrom(status_pb2.Status.FromString(row["error"]))
        elif (response := _unpack(row["response"])) is not None:
            op.response.CopyFrom(response)
        return op

    async def create(
        self,
        kind: str,
        request: Message,
        meta: Message,
        *,
        tenant: str,
        subject: str,
        request_id: str = "",
        fingerprint: str = "",
    ) -> tuple[operations_pb2.Operation, bool]:
        """The new operation and True; or, for a `request_id` this caller
        used before for the same request, the operation it created and False."""
        name = f"{self.collection}/{uuid.uuid4().hex}"
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO operations (name, kind, request_id, subject, tenant, request, metadata, fingerprint) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (kind, tenant, subject, request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING *",
                name, kind, request_id or None, subject, tenant, _pack(request), _pack(meta), fingerprint,
            )  # fmt: skip
            if row is not None:
                return self._proto(row), True
            existing = await conn.fetchrow(
                "SELECT * FROM operations WHERE kind = $1 AND tenant = $2 AND subject = $3 AND request_id = $4",
                kind, tenant, subject, request_id,
            )  # fmt: skip
        assert existing is not None  # the row the insert conflicted with is committed
        # Keys recorded before fingerprints were kept have none, and match any repeat.
        if existing["fingerprint"] and existing["fingerprint"] != fingerprint:
            raise reused(request_id)
        return self._proto(existing), False

    async def get(self, name: str, tenant: str = "") -> operations_pb2.Operation:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM operations WHERE name = $1 AND ($2 = '' OR tenant = $2)", name, tenant
            )
        if row is None:
            raise NotFound(f"operation {name!r} not found", reason="OPERATION_NOT_FOUND", metadata={"name": name})
        return self._proto(row)

    async def row(self, name: str) -> asyncpg.Record | None:
        async with self._pool.acquire() as conn:
            return await conn.fetchrow("SELECT * FROM operations WHERE name = $1", name)

    async def page(
        self, size: int, after: Sequence[Any] | None, tenant: str
    ) -> list[tuple[operations_pb2.Operation, tuple[dt.datetime, str]]]:
        """Operations newest first, each with its sort key."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM operations WHERE ($1 = '' OR tenant = $1) "
                "AND ($2::timestamptz IS NULL OR (create_time, name) < ($2, $3)) "
                "ORDER BY create_time DESC, name DESC LIMIT $4",
                tenant, after[0] if after else None, after[1] if after else "", size,
            )  # fmt: skip
        return [(self._proto(r), (r["create_time"], r["name"])) for r in rows]

    async def request_cancel(self, name: str, tenant: str = "") -> operations_pb2.Operation:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE operations SET cancel_requested = true, update_time = now() "
                "WHERE name = $1 AND NOT done AND ($2 = '' OR tenant = $2)",
                name, tenant,
            )  # fmt: skip
        return await self.get(name, tenant)

    async def update_metadata(self, name: str, meta: Message) -> bool:
        """Stores progress; returns True when cancellation was requested."""
        async with self._pool.acquire() as conn:
            cancel = await conn.fetchval(
                "UPDATE operations SET metadata = $2, update_time = now() WHERE name = $1 RETURNING cancel_requested",
                name, _pack(meta),
            )  # fmt: skip
        return bool(cancel)

    async def finish(
        self, name: str, *, meta: Message, response: Message | None = None, error: status_pb2.Status | None = None
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE operations SET done = true, metadata = $2, response = $3, error = $4, update_time = now() "
                "WHERE name = $1",
                name, _pack(meta), _pack(response), error.SerializeToString() if error is not None else None,
            )  # fmt: skip

    async def unfinished(self, kind: str) -> list[str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT name FROM operations WHERE kind = $1 AND NOT done ORDER BY create_time", kind
            )
        return [r["name"] for r in rows]


class OperationCancelled(Exception):
    """Raised by `Job.report` once the operation's cancellation was requested."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Job(Generic[RequestT, MetaT]):
    """One run of an operation, as the work function sees it."""

    name: str
    request: RequestT
    meta: MetaT
    tenant: str
    subject: str
    connection: asyncpg.Connection  # dedicated to this run; holds its claim
    store: OperationStore
    kind: str = ""
    _counted: tuple[int, int] = field(init=False)  # done and rejected, as last counted in the metrics

    def __post_init__(self) -> None:
        # A resumed operation's earlier units were counted by the process that ran them.
        self._counted = (int(self.progress.done), int(self.progress.rejected))

    @property
    def progress(self) -> operation_pb2.Progress:
        progress: operation_pb2.Progress = self.meta.progress  # type: ignore[attr-defined]
        return progress

    async def report(self, stage: str | None = None, *, cancel_message: str = "cancelled") -> None:
        """Stores the metadata; raises `OperationCancelled(cancel_message)` once
        a cancellation was requested."""
        if stage is not None:
            self.progress.stage = stage
        self.progress.update_time.GetCurrentTime()
        self.count()
        if await self.store.update_metadata(self.name, self.meta):
            self.progress.cancel_requested = True
            raise OperationCancelled(cancel_message)

    def count(self) -> None:
        """Adds the units done and rejected since the last count to the metrics."""
        done, rejected = int(self.progress.done), int(self.progress.rejected)
        OPERATION_UNITS.labels(self.kind, "done").inc(max(0, done - self._counted[0]))
        OPERATION_UNITS.labels(self.kind, "rejected").inc(max(0, rejected - self._counted[1]))
        self._counted = (max(done, self._counted[0]), max(rejected, self._counted[1]))


Work = Callable[[Job[RequestT, MetaT]], Awaitable[Message | None]]


class OperationRunner(Generic[RequestT, MetaT]):
    """Starts, claims, runs, resumes and finishes the operations of one kind."""

    def __init__(
        self,
        database: Database,
        store: OperationStore,
        kind: str,
        request_type: type[RequestT],
        meta_type: type[MetaT],
        work: Work[RequestT, MetaT],
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self._database, self.store, self.kind = database, store, kind
        self._request_type, self._meta_type, self._work = request_type, meta_type, work
        self._sweep_seconds = sweep_seconds
        self._background = BackgroundTasks()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(
        self, request: RequestT, meta: MetaT, *, tenant: str, subject: str, stored: RequestT | None = None
    ) -> operations_pb2.Operation:
        """Records the operation and runs it; a repeated `request_id` (same
        kind, tenant and caller, same request) answers the first operation
        and runs nothing. `stored` is the request as the work will read it,
        when it differs from the caller's (resolved file names)."""
        progress: operation_pb2.Progress = meta.progress  # type: ignore[attr-defined]
        progress.stage = "queued"
        progress.start_time.GetCurrentTime()
        operation, created = await self.store.create(
            self.kind,
            stored if stored is not None else request,
            meta,
            tenant=tenant,
            subject=subject,
            request_id=getattr(request, "request_id", ""),
            fingerprint=request_fingerprint(request),
        )
        if created:
            self._spawn(operation.name)
        return operation

    def _spawn(self, name: str) -> None:
        self._background.spawn(self.run(name), name)

    async def resume_unfinished(self) -> list[str]:
        """Starts a run of every unfinished operation (each claims its own,
        so one already running elsewhere is left alone), and from now on
        looks again every `sweep_seconds`."""
        names = await self.store.unfinished(self.kind)
        for name in names:
            self._spawn(name)
        if self._sweeper is None and self._sweep_seconds > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name=f"sweep {self.kind}")
        return names

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                running = self._background.names()
                for name in await self.store.unfinished(self.kind):
                    if name not in running:
                        self._spawn(name)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("operation sweep failed", kind=self.kind, error=str(exc))

    async def close(self) -> None:
        await cancel(self._sweeper)
        await self._background.close()

    async def run(self, name: str) -> None:
        """Runs the operation if nobody else does and it is not done."""
        connection = await self._database.connect()
        try:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _claim_key(name)):
                return  # another process runs it
            row = await self.store.row(name)
            if row is None or row["done"]:
                return
            request = self._request_type()
            meta = self._meta_type()
            packed_request, packed_meta = _unpack(row["request"]), _unpack(row["metadata"])
            if packed_request is None or not packed_request.Unpack(request):
                raise ValueError(f"operation {name} has no {self._request_type.DESCRIPTOR.full_name} request")
            if packed_meta is not None:
                packed_meta.Unpack(meta)
            job = Job(name, request, meta, row["tenant"], row["subject"], connection, self.store, self.kind)
            running = OPERATIONS_RUNNING.labels(self.kind)
            running.inc()
            try:
                await self._run(job)
            finally:
                running.dec()
        finally:
            await connection.close()

    async def _run(self, job: Job[RequestT, MetaT]) -> None:
        response: Message | None = None
        error: status_pb2.Status | None = None
        try:
            response = await self._work(job)
            job.progress.stage = "done"
        except asyncio.CancelledError:
            raise  # the service is stopping: the operation stays unfinished and is resumed
        except OperationCancelled as exc:
            job.progress.stage = "cancelled"
            error = status_pb2.Status(code=code_pb2.CANCELLED, message=exc.message)
        except ServiceError as exc:
            job.progress.stage = "failed"
            error = to_status(exc)
        except Exception as exc:
            incident = uuid.uuid4().hex[:12]
            log.exception("operation failed", operation=job.name, kind=self.kind, incident=incident)
            job.progress.stage = "failed"
            error = status_pb2.Status(
                code=code_pb2.INTERNAL,
                message=f"{self.kind} stopped ({type(exc).__name__}, incident {incident}); re-run it to continue",
            )
        job.progress.update_time.GetCurrentTime()
        job.progress.end_time.GetCurrentTime()
        job.count()
        OPERATIONS_FINISHED.labels(self.kind, job.progress.stage).inc()
        await self.store.finish(job.name, meta=job.meta, response=None if error else response, error=error)


class OperationRpcs:
    """`GetOperation`, `ListOperations` and `CancelOperation` over an
    `OperationStore`, for a servicer to inherit (before its generated base)."""

    operations: OperationStore

    def operations_tenant(self) -> str:
        """The tenant whose operations the caller may see; empty for all."""
        return ""

    def _operation_name(self, name: str) -> str:
        return f"{self.operations.collection}/{resource_id(name, self.operations.collection)}"

    async def GetOperation(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.GetOperationRequest, context: object
    ) -> operations_pb2.Operation:
        return await self.operations.get(self._operation_name(request.name), self.operations_tenant())

    async def ListOperations(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.ListOperationsRequest, context: object
    ) -> operations_pb2.ListOperationsResponse:
        tenant = self.operations_tenant()
        operations, token = await list_page(request, (INSTANT, TEXT), 20, self.operations.page, tenant)
        return operations_pb2.ListOperationsResponse(operations=operations, next_page_token=token)

    async def CancelOperation(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.CancelOperationRequest, context: object
    ) -> operations_pb2.Operation:
        return await self.operations.request_cancel(self._operation_name(request.name), self.operations_tenant())
