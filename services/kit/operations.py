"""Long-running operations (AIP-151) kept in the owning service's database.

Imports and settlements create an operation, report progress in its
metadata, honour cancellation between chunks, and finish with a response or
a `google.rpc.Status`. Clients poll `GetOperation`; a repeated `request_id`
returns the operation it created first. Unfinished operations survive a
restart so that the service can resume them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.errors import FieldViolation, InvalidArgument, NotFound
from services.kit.paging import decode_page_token, next_token, page_size

metadata = sa.MetaData()

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=True, unique=True),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("tenant", sa.Text, nullable=False, server_default=""),
    sa.Column("request", sa.LargeBinary, nullable=True),
    sa.Column("metadata", sa.LargeBinary, nullable=True),
    sa.Column("response", sa.LargeBinary, nullable=True),
    sa.Column("error", sa.LargeBinary, nullable=True),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


def create_operations_table(op: object) -> None:
    """For a service's Alembic migration: `create_operations_table(op)`."""
    op.create_table(  # type: ignore[attr-defined]
        "operations", *(column._copy() for column in operations.columns)
    )
    op.create_index("operations_unfinished", "operations", ["create_time"], postgresql_where=sa.text("NOT done"))  # type: ignore[attr-defined]


def _pack(message: Message | None) -> bytes | None:
    if message is None:
        return None
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed.SerializeToString()


def _unpack(data: bytes | None) -> any_pb2.Any | None:
    return any_pb2.Any.FromString(data) if data else None


@dataclass(frozen=True)
class OperationRecord:
    name: str
    kind: str
    request: any_pb2.Any | None
    tenant: str
    subject: str
    done: bool
    cancel_requested: bool

    def unpack_request(self, message: Message) -> Message:
        if self.request is None or not self.request.Unpack(message):
            raise ValueError(f"operation {self.name} has no {message.DESCRIPTOR.full_name} request")
        return message


class OperationStore:
    """Operations of one service; names are `<collection>/<uuid>`."""

    def __init__(self, engine: AsyncEngine, collection: str) -> None:
        self._engine = engine
        self._collection = collection

    def _proto(self, row: sa.Row[tuple[object, ...]]) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=row.name, done=row.done)
        if (meta := _unpack(row.metadata)) is not None:
            op.metadata.CopyFrom(meta)
        if row.error:
            op.error.CopyFrom(status_pb2.Status.FromString(row.error))
        elif (response := _unpack(row.response)) is not None:
            op.response.CopyFrom(response)
        return op

    async def create(
        self,
        kind: str,
        request: Message,
        meta: Message,
        *,
        request_id: str = "",
        tenant: str = "",
        subject: str = "",
    ) -> tuple[operations_pb2.Operation, bool]:
        """The new operation and True, or the one `request_id` created before and False."""
        name = f"{self._collection}/{uuid.uuid4().hex}"
        async with self._engine.begin() as conn:
            statement = (
                pg_insert(operations)
                .values(
                    name=name,
                    kind=kind,
                    request_id=request_id or None,
                    tenant=tenant,
                    subject=subject,
                    request=_pack(request),
                    metadata=_pack(meta),
                )
                .on_conflict_do_nothing(index_elements=["request_id"])
                .returning(operations.c.name)
            )
            created = (await conn.execute(statement)).scalar_one_or_none()
            if created is None:
                existing = (
                    await conn.execute(sa.select(operations).where(operations.c.request_id == request_id))
                ).one()
                return self._proto(existing), False
            row = (await conn.execute(sa.select(operations).where(operations.c.name == name))).one()
        return self._proto(row), True

    async def get(self, name: str, tenant: str = "") -> operations_pb2.Operation:
        query = sa.select(operations).where(operations.c.name == name)
        if tenant:
            query = query.where(operations.c.tenant == tenant)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"operation {name!r} not found", reason="OPERATION_NOT_FOUND", metadata={"name": name})
        return self._proto(row)

    async def record(self, name: str) -> OperationRecord:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(operations).where(operations.c.name == name))).one()
        return OperationRecord(
            row.name, row.kind, _unpack(row.request), row.tenant, row.subject, row.done, row.cancel_requested
        )

    async def page(
        self, *, tenant: str = "", page_size: int = 50, after: list[str] | None = None
    ) -> list[tuple[operations_pb2.Operation, list[str]]]:
        """Operations newest first, each with its keyset (for page tokens)."""
        query = (
            sa.select(operations).order_by(operations.c.create_time.desc(), operations.c.name.desc()).limit(page_size)
        )
        if tenant:
            query = query.where(operations.c.tenant == tenant)
        if after:
            created, name = dt.datetime.fromisoformat(after[0]), after[1]
            query = query.where(sa.tuple_(operations.c.create_time, operations.c.name) < sa.tuple_(created, name))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(self._proto(r), [r.create_time.isoformat(), r.name]) for r in rows]

    async def request_cancel(self, name: str, tenant: str = "") -> operations_pb2.Operation:
        query = sa.update(operations).where(operations.c.name == name, sa.not_(operations.c.done))
        if tenant:
            query = query.where(operations.c.tenant == tenant)
        async with self._engine.begin() as conn:
            await conn.execute(query.values(cancel_requested=True, update_time=sa.func.now()))
        return await self.get(name, tenant)

    async def update_metadata(self, name: str, meta: Message) -> bool:
        """Stores progress; returns True when cancellation was requested."""
        statement = (
            sa.update(operations)
            .where(operations.c.name == name)
            .values(metadata=_pack(meta), update_time=sa.func.now())
            .returning(operations.c.cancel_requested)
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).scalar_one())

    async def finish(
        self, name: str, *, meta: Message, response: Message | None = None, error: status_pb2.Status | None = None
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(operations)
                .where(operations.c.name == name)
                .values(
                    done=True,
                    metadata=_pack(meta),
                    response=_pack(response),
                    error=error.SerializeToString() if error is not None else None,
                    update_time=sa.func.now(),
                )
            )

    async def unfinished(self, kind: str) -> list[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(operations.c.name)
                .where(operations.c.kind == kind, sa.not_(operations.c.done))
                .order_by(operations.c.create_time)
            )
            return list(rows.scalars())


class OperationRpcs:
    """`GetOperation`, `ListOperations` and `CancelOperation` over an
    `OperationStore`, for a servicer to inherit (before its generated base)."""

    operations: OperationStore
    operations_collection: str

    def operations_tenant(self) -> str:
        """The tenant whose operations the caller may see; empty for all."""
        return ""

    def _operation_name(self, name: str) -> str:
        if not name.startswith(f"{self.operations_collection}/"):
            raise InvalidArgument(
                f"{name!r} is not one of this service's operations",
                reason="INVALID_NAME",
                violations=[
                    FieldViolation("name", f"must look like {self.operations_collection}/<id>", "INVALID_NAME")
                ],
            )
        return name

    async def GetOperation(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.GetOperationRequest, context: object
    ) -> operations_pb2.Operation:
        return await self.operations.get(self._operation_name(request.name), self.operations_tenant())

    async def ListOperations(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.ListOperationsRequest, context: object
    ) -> operations_pb2.ListOperationsResponse:
        size = page_size(request.page_size, 20, 100)
        after = decode_page_token(request.page_token, request)
        page = await self.operations.page(
            tenant=self.operations_tenant(), page_size=size + 1, after=[str(k) for k in after] if after else None
        )
        response = operations_pb2.ListOperationsResponse(
            operations=[operation for operation, _ in page[:size]], next_page_token=next_token(page, size, request)
        )
        return response

    async def CancelOperation(  # noqa: N802 - the RPC's name
        self, request: operations_pb2.CancelOperationRequest, context: object
    ) -> operations_pb2.Operation:
        return await self.operations.request_cancel(self._operation_name(request.name), self.operations_tenant())
