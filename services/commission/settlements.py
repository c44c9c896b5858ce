"""`RunSettlement` as a long-running operation, closing periods, and the
exports. The aggregation itself is one SQL query (`CommissionStore`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2

from bmc.commission.v1 import commission_pb2, commission_service_pb2
from bmc.common.v1 import operation_pb2
from services.commission.conversion import settlement_from_proto, settlement_to_proto
from services.commission.settlement import csv_lines, settlement_id
from services.commission.store import CommissionStore
from services.kit.background import BackgroundTasks
from services.kit.operations import OperationStore

log = structlog.get_logger("bmc.commission.settlements")
OPERATIONS = "commissionOperations"
KIND = "run-settlement"


# Reports a stage and the steps done; True when cancellation was requested.
Report = Callable[[str, int], Awaitable[bool]]


class Cancelled(Exception):
    pass


class SettlementRunner:
    def __init__(self, store: CommissionStore, operations: OperationStore) -> None:
        self._store, self._operations = store, operations
        self._background = BackgroundTasks()

    async def start(
        self, request: commission_service_pb2.RunSettlementRequest, subject: str
    ) -> operations_pb2.Operation:
        name = f"settlements/{settlement_id(request.period, request.broker)}"
        meta = commission_pb2.RunSettlementMetadata(settlement=name, progress=operation_pb2.Progress(stage="queued"))
        meta.progress.start_time.GetCurrentTime()
        operation, created = await self._operations.create(
            KIND, request, meta, request_id=request.request_id, subject=subject
        )
        if created:
            self._background.spawn(self.run(operation.name), operation.name)
        return operation

    async def resume_unfinished(self) -> None:
        for name in await self._operations.unfinished(KIND):
            self._background.spawn(self.run(name), name)

    async def close(self) -> None:
        await self._background.close()

    async def run(self, name: str) -> None:
        record = await self._operations.record(name)
        request = record.unpack_request(commission_service_pb2.RunSettlementRequest())
        assert isinstance(request, commission_service_pb2.RunSettlementRequest)
        meta = commission_pb2.RunSettlementMetadata()
        (await self._operations.get(name)).metadata.Unpack(meta)

        async def report(stage: str, done: int) -> bool:
            meta.progress.stage, meta.progress.done, meta.progress.total = stage, done, 3
            meta.progress.update_time.GetCurrentTime()
            return await self._operations.update_metadata(name, meta)

        try:
            settlement = await self.settle(request.period, request.broker, report)
        except asyncio.CancelledError:
            raise
        except Cancelled:
            meta.progress.end_time.GetCurrentTime()
            status = status_pb2.Status(code=code_pb2.CANCELLED, message="settlement cancelled")
            await self._operations.finish(name, meta=meta, error=status)
            return
        except Exception as exc:
            log.exception("settlement failed", operation=name)
            meta.progress.end_time.GetCurrentTime()
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"settlement stopped: {type(exc).__name__}")
            await self._operations.finish(name, meta=meta, error=status)
            return
        await report("done", 3)
        meta.progress.end_time.GetCurrentTime()
        await self._operations.finish(name, meta=meta, response=settlement)

    async def settle(self, period: str, broker: str, report: Report | None = None) -> commission_pb2.Settlement:
        """The settlement of `period` for `broker` (all when empty): computed
        and stored as a draft while the period is open; once closed, the
        stored closed settlement (computed once, then never again)."""
        sid = settlement_id(period, broker)
        closed = period in await self._store.closed_periods()
        if closed:
            existing = await self._store.get_settlement(sid)
            if existing is not None and existing[0].state == commission_pb2.SETTLEMENT_STATE_CLOSED:
                return existing[0]
        if report is not None and await report("aggregating", 0):
            raise Cancelled
        computed = await self._store.compute_settlement(period, broker)
        if report is not None and await report("storing", 2):
            raise Cancelled
        message = settlement_to_proto(computed, f"settlements/{sid}", closed)
        return await self._store.save_settlement(sid, message, computed.last_entry)

    async def close_period(self, period: str, who: str) -> list[str]:
        """Closes the period and settles it for good: the all-brokers
        settlement and every broker's that was run before."""
        await self._store.close_period(period, who)
        brokers = {s.broker for s, _ in await self._store.list_settlements(1000, None, period, "", True)}
        names = []
        for broker in sorted(brokers | {""}):
            names.append((await self.settle(period, broker)).name)
        return names

    @staticmethod
    def canonical_json(settlement: commission_pb2.Settlement) -> bytes:
        """The export whose SHA-256 is the settlement's `content_hash`."""
        return settlement_from_proto(settlement).canonical()

    async def csv(self, settlement: commission_pb2.Settlement, last_entry: int) -> bytes:
        rows = [row async for row in self._store.entries(settlement.period, settlement.broker, last_entry)]
        return "".join(csv_lines(rows)).encode()
