"""The mesh's routing policy, observed from the upstream's side: two product
replicas that are scripted gRPC servers (they count the attempts that reach
them and answer as told), each behind its real sidecar rendered from the
spec, called through the gateway's real sidecar. What reaches a replica
proves what the mesh did: a replica whose health check says NOT_SERVING gets
no traffic, reads are retried on another replica, a mutation without its
`request_id` is never retried, one with it is, and the caller's deadline
reaches the service."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.kit.clients import IDEMPOTENCY_HEADER
from services.kit.topology import SERVICES
from services.mesh import envoy, identities
from services.mesh.render import gateway_sidecar, local_placement, sidecar
from services.mesh.spec import load
from tests.conftest import free_port_base

PRODUCT = SERVICES["product"].full_name


@dataclass
class Replica:
    """A scripted product replica: what reached it, and how it answers."""

    index: int
    health: health.HealthServicer = field(default_factory=health.HealthServicer)
    attempts: Counter[str] = field(default_factory=Counter)
    answer: grpc.StatusCode = grpc.StatusCode.OK
    deadlines: list[float | None] = field(default_factory=list)

    def serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(PRODUCT, status)

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.attempts[method] += 1
            self.deadlines.append(context.time_remaining())
            if self.answer != grpc.StatusCode.OK:
                context.abort(self.answer, f"replica {self.index} says {self.answer.name}")
            reply: bytes = product_pb2.Product(name=f"products/R{self.index}").SerializeToString()
            return reply

        return grpc.unary_unary_rpc_method_handler(handle)  # bytes in, bytes out


@dataclass
class Mesh:
    replicas: list[Replica]
    outbound: int  # the gateway sidecar's egress
    admin: int  # ... and its admin port

    def call(self, method: str, request: Any, metadata: tuple[tuple[str, str], ...] = (), timeout: float = 5) -> Any:
        with grpc.insecure_channel(f"127.0.0.1:{self.outbound}") as channel:
            stub = product_service_pb2_grpc.ProductServiceStub(channel)
            return getattr(stub, method)(request, metadata=metadata, timeout=timeout)

    def reached(self, method: str) -> int:
        return sum(replica.attempts[method] for replica in self.replicas)

    def everyone(self, serving: bool, answer: grpc.StatusCode = grpc.StatusCode.OK) -> None:
        for replica in self.replicas:
            replica.serving(serving)
            replica.answer = answer
            replica.attempts.clear()
            replica.deadlines.clear()

    def healthy(self, count: int) -> None:
        """Waits until the gateway's sidecar counts `count` healthy product replicas."""
        deadline = time.monotonic() + 15
        while envoy.counters(self.admin).get("cluster.product.membership_healthy", -1) != count:
            assert time.monotonic() < deadline, f"never {count} healthy product replicas"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    spec = load()
    pki: Path = tmp_path_factory.mktemp("mesh-policy")
    for identity in ("product", "gateway"):
        identities.issue(pki, identity, spec.identity(identity))
    base = free_port_base(mesh=True)
    place = local_placement(base, base, pki, base + 443)
    replicas = [Replica(0), Replica(1)]
    servers, envoys = [], []
    try:
        for replica in replicas:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
            handlers = {name: replica.handler(name) for name in SERVICES["product"].descriptor.methods_by_name}
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(PRODUCT, handlers)])
            health_pb2_grpc.add_HealthServicer_to_server(replica.health, server)
            server.add_insecure_port(f"127.0.0.1:{place.app('product', replica.index)}")
            server.start()
            servers.append(server)
        configs = {f"product-{r.index}": sidecar(spec, place, "product", r.index) for r in replicas}
        configs["gateway"] = gateway_sidecar(spec, place)
        for name, config in configs.items():
            path = pki / f"{name}.json"
            path.write_text(json.dumps(config))
            envoys.append(envoy.start(path, pki / f"envoy-{name}.log"))
        admins = [place.admin("product", 0), place.admin("product", 1), place.admin("gateway", 0)]
        for admin, process in zip(admins, envoys, strict=True):
            envoy.wait_ready(admin, process)
        yield Mesh(replicas, place.outbound("gateway", 0), place.admin("gateway", 0))
    finally:
        for process in envoys:
            process.terminate()
            process.wait(timeout=10)
        for server in servers:
            server.stop(None)


GET = product_service_pb2.GetProductRequest(name="products/MAIZ")


def test_a_replica_whose_health_check_says_not_serving_gets_no_traffic(mesh: Mesh) -> None:
    mesh.everyone(serving=True)
    mesh.replicas[1].serving(False)
    mesh.healthy(1)
    answered = Counter(mesh.call("GetProduct", GET).name for _ in range(40))
    assert answered == {"products/R0": 40}
    assert mesh.replicas[1].attempts["GetProduct"] == 0

    mesh.replicas[1].serving(True)
    mesh.healthy(2)
    deadline = time.monotonic() + 10  # the healthy host set reaches the sidecar's worker thread
    while mesh.call("GetProduct", GET).name != "products/R1":
        assert time.monotonic() < deadline, "back to SERVING, it never got traffic again"
    answered = Counter(mesh.call("GetProduct", GET).name for _ in range(40))
    assert answered["products/R1"] >= 10, f"back to SERVING, it gets its share again: {answered}"


def test_the_service_sees_the_callers_deadline(mesh: Mesh) -> None:
    mesh.everyone(serving=True)
    mesh.healthy(2)
    mesh.call("GetProduct", GET, timeout=1.0)
    seen = [d for replica in mesh.replicas for d in replica.deadlines]
    assert len(seen) == 1
    assert seen[0] is not None
    # gRPC rounds the grpc-timeout it sends up a little; the route's own timeout is 2 s.
    assert 0.5 < seen[0] <= 1.05, f"the service had {seen[0]} s left of the caller's 1 s"


def test_a_read_refused_as_unavailable_is_retried_on_the_other_replica(mesh: Mesh) -> None:
    """(Replica 0 is ejected on the way, by outlier detection: the tests after
    this one need only one replica up.)"""
    mesh.everyone(serving=True)
    mesh.healthy(2)
    mesh.replicas[0].answer = grpc.StatusCode.UNAVAILABLE
    before = envoy.counters(mesh.admin)
    answered = Counter(mesh.call("GetProduct", GET).name for _ in range(20))
    after = envoy.counters(mesh.admin)
    assert answered == {"products/R1": 20}, "every read ends on the replica that answers"
    assert mesh.replicas[0].attempts["GetProduct"] > 0, "some reads tried replica 0 first, and were retried"
    assert after["cluster.product.upstream_rq_retry"] > before.get("cluster.product.upstream_rq_retry", 0)
    ejected = "cluster.product.outlier_detection.ejections_enforced_total"
    assert after.get(ejected, 0) > before.get(ejected, 0), "replica 0, refusing while its health checks pass, ejected"


def test_a_mutation_without_its_request_id_is_never_retried(mesh: Mesh) -> None:
    mesh.everyone(serving=True, answer=grpc.StatusCode.UNAVAILABLE)
    update = product_service_pb2.UpdateProductRequest(product=product_pb2.Product(name="products/MAIZ"))
    create = product_service_pb2.CreateProductRequest(product_id="maiz")
    for method, request in (("UpdateProduct", update), ("CreateProduct", create)):
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as refused:
                mesh.call(method, request)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert mesh.reached(method) == 10, f"{method}: one attempt per call"


def test_a_mutation_with_its_request_id_is_retried(mesh: Mesh) -> None:
    mesh.everyone(serving=True, answer=grpc.StatusCode.UNAVAILABLE)
    create = product_service_pb2.CreateProductRequest(product_id="maiz", request_id="k1")
    with pytest.raises(grpc.RpcError):
        mesh.call("CreateProduct", create, metadata=((IDEMPOTENCY_HEADER, "k1"),))
    policy = load().policy_of("product")
    assert mesh.reached("CreateProduct") == 1 + policy.retry_attempts
