"""`RunSettlement` as a long-running operation, closing periods, and the
exports. The aggregation itself is one SQL query (`CommissionStore`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from google.longrunning import operations_pb2

from bmc.commission.v1 import commission_pb2, commission_service_pb2
from services.commission.conversion import settlement_from_proto, settlement_to_proto
from services.commission.settlement import csv_lines, settlement_id
from services.commission.store import CommissionStore
from services.kit.database import Database
from services.kit.operations import Job, OperationRunner, OperationStore

OPERATIONS = "commissionOperations"
KIND = "run-settlement"
STEPS = 3

# Reports a stage and the steps done; raises OperationCancelled when cancellation was requested.
Report = Callable[[str, int], Awaitable[None]]
SettlementJob = Job[commission_service_pb2.RunSettlementRequest, commission_pb2.RunSettlementMetadata]


class SettlementRunner:
    def __init__(self, store: CommissionStore, database: Database, operations: OperationStore) -> None:
        self._store = store
        self.runner = OperationRunner(
            database,
            operations,
            KIND,
            commission_service_pb2.RunSettlementRequest,
            commission_pb2.RunSettlementMetadata,
            self._run,
        )

    async def start(
        self, request: commission_service_pb2.RunSettlementRequest, subject: str
    ) -> operations_pb2.Operation:
        name = f"settlements/{settlement_id(request.period, request.broker)}"
        meta = commission_pb2.RunSettlementMetadata(settlement=name)
        return await self.runner.start(request, meta, tenant="", subject=subject)

    async def resume_unfinished(self) -> None:
        await self.runner.resume_unfinished()

    async def close(self) -> None:
        await self.runner.close()

    async def _run(self, job: SettlementJob) -> commission_pb2.Settlement:
        async def report(stage: str, done: int) -> None:
            job.progress.done, job.progress.total = done, STEPS
            await job.report(stage, cancel_message="settlement cancelled")

        settlement = await self.settle(job.request.period, job.request.broker, report)
        job.progress.done = STEPS
        return settlement

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
        if report is not None:
            await report("aggregating", 0)
        computed = await self._store.compute_settlement(period, broker)
        if report is not None:
            await report("storing", 2)
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
