"""Recovery: how soon the platform works again after a fault.

1. Catch-up after Redis loses its data: the commission service is frozen
   while a backlog of registrations builds up on the invoice stream, then
   Redis loses everything (FLUSHALL, as an ElastiCache failover may) and the
   service resumes; time until every invoice has its commission, read from
   the invoice service's log. Baseline in the same run: the same backlog
   delivered by the stream (nothing lost).
2. Time from a dependency's return to the first successful registration
   (one caller registering one invoice at a time, 2 s deadline): Redis
   frozen, PostgreSQL frozen, the product service killed and restarted.

    .venv/bin/python -m bench.recovery [--backlog 2000] [--freeze 5]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import redis

from bench.harness import platform
from bmc.invoice.v1 import invoice_service_pb2
from services.cli.cluster import Cluster
from services.dian import calendar
from services.invoice.synth import invoices
from tests.integration.database import rows
from tests.integration.faults import frozen, server_pids, service_pids
from tests.integration.invoice_helpers import invoice, load_sample_catalog, registry


def commissions_of(cluster: Cluster, broker: str) -> int:
    (count,) = rows(cluster, "commission", "SELECT count(*) FROM commissions WHERE broker = $1", broker)[0]
    return int(count)  # type: ignore[call-overload]


def backlog_run(cluster: Cluster, size: int, lose: bool) -> float:
    """Seconds from the commission service's resumption to its last commission of the backlog."""
    assert cluster.infrastructure is not None
    tenant = f"r{uuid.uuid4().hex[:8]}"
    documents = list(invoices(size, calendar.today(), seed=size + lose, prefix=f"REC{int(lose)}"))
    with registry(cluster.settings, tenant=tenant) as reg, frozen(service_pids(cluster, "commission")):
        time.sleep(1.5)  # a read it had blocked on Redis ends (empty) before the backlog starts
        for start in range(0, size, 500):
            requests = [invoice_service_pb2.RegisterInvoiceRequest(invoice=d) for d in documents[start : start + 500]]
            reg.BatchRegisterInvoices(invoice_service_pb2.BatchRegisterInvoicesRequest(requests=requests), timeout=120)
        if lose:
            redis.Redis.from_url(cluster.infrastructure.redis_url).flushall()
    resumed = time.perf_counter()
    while commissions_of(cluster, f"brokers/{tenant}") < size:
        time.sleep(0.1)
    return time.perf_counter() - resumed


class Prober:
    """Registers one invoice at a time and notes when each succeeded."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster, self.successes = cluster, [0.0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with registry(self._cluster.settings, tenant="probe") as reg:
            while not self._stop.is_set():
                try:
                    reg.RegisterInvoice(invoice_service_pb2.RegisterInvoiceRequest(invoice=invoice()), timeout=2)
                    self.successes.append(time.perf_counter())
                except grpc.RpcError:
                    time.sleep(0.02)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def after(self, fault: Callable[[], None]) -> float:
        """Seconds from the end of `fault` to the next successful registration."""
        while self.successes[-1] < time.perf_counter() - 0.5:  # running normally first
            time.sleep(0.05)
        fault()
        healed = time.perf_counter()
        while self.successes[-1] <= healed:
            time.sleep(0.005)
        return self.successes[-1] - healed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--freeze", type=float, default=5.0)
    args = parser.parse_args()
    with platform(["product", "invoice", "commission"]) as cluster:
        load_sample_catalog(cluster.settings)
        assert cluster.infrastructure is not None
        settings = cluster.settings
        print(
            f"catch-up grace {settings.catchup_grace_seconds} s, probe {settings.catchup_probe_seconds} s", flush=True
        )
        streamed = backlog_run(cluster, args.backlog, lose=False)
        print(f"{args.backlog} registrations delivered by the stream [baseline]: {streamed:6.1f} s "
              f"({args.backlog / streamed:6.0f}/s)", flush=True)  # fmt: skip
        caught = backlog_run(cluster, args.backlog, lose=True)
        print(f"{args.backlog} registrations lost with Redis, caught up from the log: {caught:6.1f} s "
              f"({args.backlog / caught:6.0f}/s)  {caught / streamed:5.2f}x the baseline", flush=True)  # fmt: skip

        def freeze(targets: list[int]) -> Callable[[], None]:
            def fault() -> None:
                with frozen(targets):
                    time.sleep(args.freeze)

            return fault

        def restart_products() -> None:
            cluster.kill("product")
            time.sleep(args.freeze)
            cluster.restart("product")  # returns once it answers its health check

        with Prober(cluster) as probe:
            faults = {
                f"Redis frozen {args.freeze:.0f} s": freeze(server_pids(cluster, "redis")),
                f"PostgreSQL frozen {args.freeze:.0f} s": freeze(server_pids(cluster, "postgresql")),
                f"product service killed, restarted after {args.freeze:.0f} s": restart_products,
            }
            for name, fault in faults.items():
                print(f"{name:<52} first registration {probe.after(fault):6.2f} s after the return", flush=True)


if __name__ == "__main__":
    main()
