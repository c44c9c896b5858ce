"""The mesh on this machine (the default; `BMC_MESH=0` turns it off): identities issued by the dev
mesh CA, one Envoy per replica of each service, the REST gateway's sidecar
and the edge, rendered from the spec for the deployment's ports into
`<data>/mesh/`, started before the services and restarted when they die."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from services.kit.settings import Settings
from services.mesh import envoy, identities
from services.mesh.render import Placement, edge, gateway_sidecar, mesh_placement, sidecar
from services.mesh.spec import MeshSpec, load


class Sidecars:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings, self.log_dir = settings, log_dir
        self.spec: MeshSpec = load()
        self.place = mesh_placement(settings)
        self.directory = settings.data_dir / "mesh"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._admin: dict[str, int] = {}

    def _configs(self, services: list[str], gateway: bool) -> dict[str, tuple[dict[str, object], int]]:
        """Each Envoy's name, bootstrap and admin port."""
        configs: dict[str, tuple[dict[str, object], int]] = {}
        for service in services:
            for replica in range(self.spec.services[service].replicas):
                configs[f"{service}-{replica}"] = (
                    sidecar(self.spec, self.place, service, replica),
                    self.place.admin(service, replica),
                )
        if gateway:
            configs["gateway"] = (gateway_sidecar(self.spec, self.place), self.place.admin("gateway", 0))
        # The entry point of clients from outside, with or without the REST gateway behind it.
        configs["edge"] = (edge(self.spec, self.place), self.place.admin("edge", 0))
        return configs

    def ports(self, services: list[str], gateway: bool) -> list[tuple[str, int]]:
        return listening_ports(self.spec, self.place, services, gateway)

    def start(self, services: list[str], gateway: bool) -> None:
        """Issues every identity, renders every Envoy, starts them and waits until each is live."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for identity in [*services, "gateway", "edge"]:
            identities.issue(self.settings.pki_dir, identity, self.spec.identity(identity))
        for name, (config, admin) in self._configs(services, gateway).items():
            path = self.directory / f"{name}.json"
            path.write_text(json.dumps(config, indent=2))
            self._admin[name] = admin
            self.processes[name] = self._start(name)
        for name, process in self.processes.items():
            envoy.wait_ready(self._admin[name], process)

    def _start(self, name: str) -> subprocess.Popen[bytes]:
        return envoy.start(self.directory / f"{name}.json", self.log_dir / f"envoy-{name}.log")

    def revive(self) -> list[str]:
        """Restarts the sidecars that died; their names."""
        revived = []
        for name, process in self.processes.items():
            if process.poll() is not None:
                self.processes[name] = self._start(name)
                revived.append(f"envoy {name}")
        return revived

    def wait_routable(self, services: list[str], timeout: float = 30.0) -> None:
        """Until the edge routes to every replica of `services`, now serving:
        each counted healthy, with two fresh successful health checks per
        replica since this call (so that failures the edge counted before a
        restart cannot take a replica out of the pool just after it)."""
        deadline = time.monotonic() + timeout
        before = envoy.counters(self._admin["edge"])
        while True:
            counters = envoy.counters(self._admin["edge"])
            pending = []
            for name in services:
                replicas = self.spec.services[name].replicas
                fresh = counters.get(f"cluster.{name}.health_check.success", 0) - before.get(
                    f"cluster.{name}.health_check.success", 0
                )
                if fresh < 2 * replicas or counters.get(f"cluster.{name}.membership_healthy", 0) < replicas:
                    pending.append(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the edge finds no healthy {', '.join(pending)} after {timeout:.0f}s")
            time.sleep(0.1)

    def admin_port(self, name: str) -> int:
        return self._admin[name]

    def admin_ports(self) -> dict[str, int]:
        """Each sidecar's admin port (its /stats/prometheus), by name."""
        return dict(self._admin)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def names_and_admin_ports(settings: Settings) -> dict[str, int]:
    """Every Envoy of the mesh on this machine, by name, and its admin port."""
    spec, place = load(), mesh_placement(settings)
    ports = {
        f"{service}-{replica}": place.admin(service, replica)
        for service, declared in spec.services.items()
        for replica in range(declared.replicas)
    }
    return ports | {"gateway": place.admin("gateway", 0), "edge": place.admin("edge", 0)}


def summary(counters: dict[str, int]) -> dict[str, int]:
    """What an operator watches on a sidecar, from its counters."""

    def total(prefix: str, suffix: str) -> int:
        return sum(v for k, v in counters.items() if k.startswith(prefix) and k.endswith(suffix))

    return {
        "requests in": counters.get("http.inbound.rq_total", 0)
        + counters.get("http.edge_rest.rq_total", 0)
        + counters.get("http.edge_grpc.rq_total", 0),
        "requests out": counters.get("http.outbound.rq_total", 0),
        "mTLS handshakes": total("listener.", ".ssl.handshake") + total("cluster.", ".ssl.handshake"),
        "TLS refused": sum(
            v
            for k, v in counters.items()
            if k.startswith("listener.") and (".ssl.fail_verify" in k or k.endswith(".ssl.connection_error"))
        ),
        "RBAC denied": counters.get("http.inbound.rbac.denied", 0),
        "breaker overflows": total("cluster.", ".upstream_rq_active_overflow")
        + total("cluster.", ".upstream_rq_pending_overflow")
        + total("cluster.", ".upstream_rq_retry_overflow"),
        "retries": total("cluster.", ".upstream_rq_retry"),
        "health check failures": total("cluster.", ".health_check.failure"),
        "ejections": total("cluster.", ".outlier_detection.ejections_enforced_total"),
    }


def listening_ports(spec: MeshSpec, place: Placement, services: list[str], gateway: bool) -> list[tuple[str, int]]:
    """Every port the mesh listens on for a placement: (what, port)."""
    used: list[tuple[str, int]] = []
    for service in services:
        for replica in range(spec.services[service].replicas):
            name = f"{service}-{replica}"
            used += [(f"{name} sidecar inbound", place.bind_inbound(service, replica)[1]),
                     (f"{name} sidecar outbound", place.outbound(service, replica)),
                     (f"{name} sidecar admin", place.admin(service, replica))]  # fmt: skip
            if replica:
                used.append((f"{name}", place.app(service, replica)))
    if gateway:
        used += [("gateway sidecar outbound", place.outbound("gateway", 0)),
                 ("gateway sidecar admin", place.admin("gateway", 0))]  # fmt: skip
    used += [
        ("edge admin", place.admin("edge", 0)),
        ("edge REST", place.edge_rest[1]),
        ("edge gRPC", place.edge_grpc[1]),
    ]
    return used
