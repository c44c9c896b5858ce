"""The mesh's cost: the same calls direct to a service and through two
Envoy sidecars (the caller's outbound listener, then mTLS 1.3 to the
callee's inbound one, RBAC, then the service), side by side in one run on
one platform started with the mesh; the sidecars' memory and the whole
mesh's start-up time.

    .venv/bin/python -m bench.mesh [--seconds 8] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

import grpc
import psutil

from bench.harness import drive, platform, summary, unary
from bmc.invoice.v1 import invoice_service_pb2
from bmc.product.v1 import product_service_pb2
from services.cli.cluster import Cluster
from services.dian import calendar
from services.invoice.synth import invoices
from services.kit.clients import bearer
from services.kit.tokens import mint_token
from tests.integration.invoice_helpers import load_sample_catalog


async def compare(cluster: Cluster, seconds: float, concurrency: int) -> str:
    assert cluster.sidecars is not None
    settings, place = cluster.settings, cluster.sidecars.place
    token = bearer(mint_token(settings, subject="bench", roles=["operator"], tenant=""))
    direct = {name: f"127.0.0.1:{place.app(name, 0)}" for name in ("product", "invoice")}
    meshed = f"127.0.0.1:{place.outbound('gateway', 0)}"  # the gateway's sidecar routes every RPC
    get = product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO")
    documents = iter(invoices(10**6, calendar.today(), seed=11, prefix="MESH"))

    def get_product(target: str) -> object:
        def make(channel: grpc.aio.Channel) -> object:
            rpc = unary(channel, "/bmc.product.v1.ProductService/GetProduct", product_service_pb2.GetProductRequest)
            return lambda: rpc(get, metadata=token, timeout=10)

        return make

    def register(channel: grpc.aio.Channel) -> object:
        rpc = unary(channel, "/bmc.invoice.v1.InvoiceService/BatchRegisterInvoices",
                    invoice_service_pb2.BatchRegisterInvoicesRequest)  # fmt: skip

        def call() -> object:
            batch = [invoice_service_pb2.RegisterInvoiceRequest(invoice=next(documents)) for _ in range(10)]
            return rpc(invoice_service_pb2.BatchRegisterInvoicesRequest(requests=batch), metadata=token, timeout=30)

        return call

    lines, costs = [], []
    for runs, callers in (
        ((("GetProduct direct [baseline]", direct["product"], get_product(direct["product"])),
          ("GetProduct through two sidecars", meshed, get_product(meshed))), concurrency),
        ((("BatchRegisterInvoices ×10 direct [baseline]", direct["invoice"], register),
          ("BatchRegisterInvoices ×10 through two sidecars", meshed, register)), 4),
    ):  # fmt: skip
        results = []
        for name, target, make in runs:
            channels = [grpc.aio.insecure_channel(target) for _ in range(2)]
            before = cpu_seconds(cluster)
            results.append(await drive(name, make, channels, callers, seconds))  # type: ignore[arg-type]
            spent = {part: cpu_seconds(cluster)[part] - used for part, used in before.items()}
            costs.append(f"  {name:<48} " + "  ".join(
                f"{part} {1000 * used / max(results[-1].calls, 1):5.2f}" for part, used in spent.items()))  # fmt: skip
            for channel in channels:
                await channel.close()
        lines.append(summary(results))
    return "\n".join([*lines, "CPU ms per call (2 cores shared by all):", *costs])


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """CPU time used so far by the client (this process), the services (with
    their worker processes) and the Envoys."""

    def used(pids: list[int], children: bool) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                for each in [process, *(process.children(recursive=True) if children else [])]:
                    times = each.cpu_times()
                    total += times.user + times.system
        return total

    assert cluster.sidecars is not None
    services = [p.pid for group in cluster.processes.values() for p in group]
    return {
        "client": used([os.getpid()], children=False),
        "services": used(services, children=True),
        "envoys": used([p.pid for p in cluster.sidecars.processes.values()], children=False),
    }


def memory(cluster: Cluster) -> str:
    assert cluster.sidecars is not None
    rows = []
    for name, process in sorted(cluster.sidecars.processes.items()):
        info = psutil.Process(process.pid).memory_full_info()
        rows.append(f"  {name:<16} RSS {info.rss / 2**20:6.1f} MiB  (anonymous {info.uss / 2**20:6.1f} MiB, "
                    f"shared {info.shared / 2**20:6.1f} MiB)")  # fmt: skip
    return "sidecar memory:\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    started = time.perf_counter()
    with platform(["product", "invoice", "commission", "certificate", "ocr"], gateway=True, mesh=True) as cluster:
        print(f"platform with its mesh started in {time.perf_counter() - started:.1f} s "
              f"({len(cluster.sidecars.processes) if cluster.sidecars else 0} Envoys)", flush=True)  # fmt: skip
        load_sample_catalog(cluster.settings)
        print(memory(cluster), flush=True)
        print(asyncio.run(compare(cluster, args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
