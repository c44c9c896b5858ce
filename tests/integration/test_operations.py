"""The kit's long-running operation runner against a real database: one run
per operation however many workers try, idempotency keys scoped to (kind,
tenant, caller), cancellation, failures, and resumption after a crash."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from services.kit.database import Database
from services.kit.errors import AlreadyExists, FailedPrecondition
from services.kit.operations import Job, OperationRunner, OperationStore
from tests.conftest import Platform
from tests.integration.database import fresh_database

Request = invoice_service_pb2.ImportInvoicesRequest
Meta = invoice_pb2.ImportInvoicesMetadata


def operations_database(platform: Platform) -> AbstractAsyncContextManager[Database]:
    """A fresh database with the invoice service's schema (its operations table)."""
    return fresh_database(platform.cluster, "invoice")


class Recorder:
    """A work function that records its runs and does what it is told."""

    def __init__(self, outcome: object = None, hold: float = 0.0) -> None:
        self.runs: list[str] = []
        self.outcome, self.hold = outcome, hold
        self.started = asyncio.Event()

    async def __call__(self, job: Job[Request, Meta]) -> wrappers_pb2.StringValue:
        self.runs.append(job.name)
        self.started.set()
        job.progress.done = 1
        await asyncio.sleep(self.hold)
        await job.report("working")
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return wrappers_pb2.StringValue(value=f"{job.tenant}:{job.subject}:{job.request.filename}")


def runner(database: Database, work: Recorder) -> OperationRunner[Request, Meta]:
    store = OperationStore(database.pool, "testOperations")
    return OperationRunner(database, store, "test", Request, Meta, work, sweep_seconds=0)


async def _done(runner: OperationRunner[Request, Meta], name: str) -> Any:
    for _ in range(200):
        operation = await runner.store.get(name)
        if operation.done:
            return operation
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} not done")


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_an_unfinished_operation_is_run_by_one_worker_only(platform: Platform) -> None:
    async def scenario() -> tuple[list[str], list[str], Any]:
        async with operations_database(platform) as database:
            first, second = Recorder(hold=0.5), Recorder(hold=0.5)
            a, b = runner(database, first), runner(database, second)
            operation, _ = await a.store.create("test", Request(filename="f"), Meta(), tenant="", subject="ops")
            await asyncio.gather(a.run(operation.name), b.run(operation.name), a.run(operation.name))
            done = await a.store.get(operation.name)
            await a.close()
            await b.close()
            return first.runs, second.runs, done

    first, second, done = asyncio.run(scenario())
    assert len(first) + len(second) == 1, (first, second)
    assert done.done


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_keys_are_scoped_to_kind_tenant_and_caller(platform: Platform) -> None:
    async def scenario() -> dict[str, Any]:
        async with operations_database(platform) as database:
            work = Recorder()
            ops = runner(database, work)
            key = uuid.uuid4().hex
            mine = Request(filename="mine.csv", request_id=key)
            a = await ops.start(mine, Meta(), tenant="brokers/a", subject="client:a")
            again = await ops.start(mine, Meta(), tenant="brokers/a", subject="client:a")
            other_tenant = await ops.start(
                Request(filename="theirs.csv", request_id=key), Meta(), tenant="brokers/b", subject="client:b"
            )
            other_caller = await ops.start(mine, Meta(), tenant="brokers/a", subject="client:a2")
            try:
                await ops.start(
                    Request(filename="other.csv", request_id=key), Meta(), tenant="brokers/a", subject="client:a"
                )
                reused: Any = None
            except AlreadyExists as exc:
                reused = exc
            results = {}
            for label, op in (("a", a), ("other_tenant", other_tenant), ("other_caller", other_caller)):
                finished = await _done(ops, op.name)
                value = wrappers_pb2.StringValue()
                finished.response.Unpack(value)
                results[label] = value.value
            await ops.close()
            return {
                "same": again.name == a.name,
                "names": {a.name, other_tenant.name, other_caller.name},
                "reused": reused,
                **results,
            }

    outcome = asyncio.run(scenario())
    assert outcome["same"]
    assert len(outcome["names"]) == 3
    assert isinstance(outcome["reused"], AlreadyExists)
    assert outcome["reused"].reason == "REQUEST_ID_REUSED"
    assert (outcome["a"], outcome["other_tenant"]) == ("brokers/a:client:a:mine.csv", "brokers/b:client:b:theirs.csv")


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_cancellation_failures_and_resumption(platform: Platform) -> None:
    async def scenario() -> dict[str, Any]:
        async with operations_database(platform) as database:
            slow = Recorder(hold=0.3)
            ops = runner(database, slow)
            cancelled = await ops.start(Request(filename="c"), Meta(), tenant="", subject="ops")
            await slow.started.wait()
            await ops.store.request_cancel(cancelled.name)
            cancelled_done = await _done(ops, cancelled.name)
            await ops.close()

            refusing = runner(database, Recorder(outcome=FailedPrecondition("no", reason="NOT_NOW")))
            refused = await refusing.start(Request(filename="r"), Meta(), tenant="", subject="ops")
            refused_done = await _done(refusing, refused.name)
            await refusing.close()

            crashing = Recorder(hold=30)
            crashed_runner = runner(database, crashing)
            crashed = await crashed_runner.start(Request(filename="k"), Meta(), tenant="", subject="ops")
            await crashing.started.wait()
            await crashed_runner.close()  # the process stops mid-run: the operation stays unfinished
            unfinished = await crashed_runner.store.get(crashed.name)
            resumed_work = Recorder()
            resumed_runner = runner(database, resumed_work)
            resumed_names = await resumed_runner.resume_unfinished()
            resumed_done = await _done(resumed_runner, crashed.name)
            await resumed_runner.close()
            return {
                "cancelled": cancelled_done,
                "refused": refused_done,
                "unfinished": unfinished.done,
                "resumed": resumed_names,
                "resumed_done": resumed_done,
                "resumed_runs": resumed_work.runs,
            }

    outcome = asyncio.run(scenario())
    cancelled, refused, resumed = outcome["cancelled"], outcome["refused"], outcome["resumed_done"]
    meta = Meta()
    cancelled.metadata.Unpack(meta)
    assert cancelled.error.code == code_pb2.CANCELLED
    assert (meta.progress.stage, meta.progress.cancel_requested) == ("cancelled", True)
    assert meta.progress.HasField("end_time")
    assert refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert outcome["unfinished"] is False
    assert outcome["resumed_runs"] == outcome["resumed"] == [resumed.name]
    assert not resumed.HasField("error")
