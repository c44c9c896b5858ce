"""`bmc demo`'s mesh step: catalog lookups through the edge while one of the
two product replicas is killed (none may fail: the sidecars retry reads on
the other replica and stop sending to the dead one), an RPC the mesh's RBAC
refuses before the service sees it, and the sidecar counters that moved."""

from __future__ import annotations

import time

import grpc
from rich.console import Console
from rich.table import Table

from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.cli.cluster import Cluster
from services.kit.clients import bearer, sync_channel
from services.kit.tokens import mint_token
from services.mesh import envoy, identities
from services.mesh.sidecars import summary

LOOKUPS = 300
CODES = ["MAIZ-AMARILLO", "CAFE-PERGAMINO", "NOVILLO-GORDO", "AZUCAR-REFINADA"]


def _figures(cluster: Cluster) -> dict[str, dict[str, int]]:
    assert cluster.sidecars is not None
    figures = {}
    for name in cluster.sidecars.processes:
        try:
            figures[name] = summary(envoy.counters(cluster.sidecars.admin_port(name)))
        except OSError:  # a sidecar being restarted
            figures[name] = {}
    return figures


def _lookups_while_a_replica_dies(cluster: Cluster, token: tuple[tuple[str, str], ...]) -> tuple[int, list[str]]:
    """LOOKUPS catalog lookups through the edge; product replica 1 is killed a
    third of the way through. (lookups that succeeded, failures)."""
    failures: list[str] = []
    done = 0
    with sync_channel(cluster.settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        request = product_service_pb2.BatchGetProductsRequest(names=[f"products/{c}" for c in CODES])
        for n in range(LOOKUPS):
            if n == LOOKUPS // 3:
                cluster.processes["product"][1].kill()  # SIGKILL, as a crash
            try:
                stub.BatchGetProducts(request, metadata=token, timeout=10)
                done += 1
            except grpc.RpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
    return done, failures


def _refused_by_rbac(cluster: Cluster) -> tuple[str, str]:
    """The invoice service's identity may only BatchGetProducts on the product
    service: its GetProduct is refused by product-0's sidecar."""
    assert cluster.sidecars is not None
    place = cluster.sidecars.place
    credentials = identities.client_credentials(identities.directory(cluster.settings.pki_dir, "invoice"))
    host, port = place.inbound("product", 0)
    token = bearer(mint_token(cluster.settings, subject="service:invoice", roles=["service"]))
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        try:
            get = product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO")
            stub.GetProduct(get, metadata=token, timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", f"{host}:{port} let it through"


def mesh_step(cluster: Cluster, console: Console) -> dict[str, object]:
    if cluster.sidecars is None:
        console.print("[yellow]mesh step skipped: running without the mesh (--no-mesh)[/]")
        return {"skipped": "no mesh", "ok": True}
    token = bearer(mint_token(cluster.settings, subject="demo-operator", roles=["operator"]))
    before = _figures(cluster)
    started = time.monotonic()
    succeeded, failures = _lookups_while_a_replica_dies(cluster, token)
    seconds = time.monotonic() - started
    cluster.restart("product")  # as `bmc up`'s supervisor would
    code, detail = _refused_by_rbac(cluster)
    after = _figures(cluster)
    moved = {
        sidecar: {name: after[sidecar][name] - before[sidecar].get(name, 0) for name in after[sidecar]}
        for sidecar in after
    }
    moved = {sidecar: {k: v for k, v in figures.items() if v} for sidecar, figures in moved.items()}
    columns = sorted({name for figures in moved.values() for name in figures})
    table = Table(title="the mesh: what moved during this step")
    table.add_column("sidecar")
    for column in columns:
        table.add_column(column, justify="right")
    for sidecar, figures in moved.items():
        if figures:
            table.add_row(sidecar, *(f"{figures.get(c, 0):,}" for c in columns))
    console.print(
        f"{LOOKUPS} catalog lookups through the edge, product replica 1 killed (SIGKILL) after {LOOKUPS // 3}: "
        f"{succeeded} answered, {len(failures)} failed, in {seconds:.1f}s; replica restarted"
    )
    console.print(f"invoice identity calling ProductService/GetProduct (not in its allow list): {code} {detail}")
    console.print(table)
    noticed = sum(
        figures.get("ejections", 0) + figures.get("health check failures", 0) + figures.get("retries", 0)
        for figures in moved.values()
    )
    return {
        "lookups": LOOKUPS,
        "answered": succeeded,
        "failures": failures[:5],
        "rbac_refusal": {"code": code, "detail": detail},
        "moved": moved,
        "ok": succeeded == LOOKUPS and code == "PERMISSION_DENIED" and noticed > 0,
    }
