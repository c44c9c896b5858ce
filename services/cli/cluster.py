"""Runs the platform as separate processes: the embedded databases when
needed, then one process per service, each checked healthy through
`grpc.health.v1`, all stopped together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from services.kit import orphans
from services.kit.embedded import EmbeddedInfrastructure, ensure_infrastructure
from services.kit.metrics import GATEWAY_OFFSET, metrics_port
from services.kit.pki import CLIENTS, DevPki, client_ssl_context
from services.kit.probe import health_of
from services.kit.settings import Settings
from services.kit.tokens import ensure_dev_signing_key
from services.kit.topology import SERVICES, ServiceSpec, client_host
from services.mesh.access import ca_file, edge_ssl_context, edge_url, operator
from services.mesh.sidecars import Sidecars


class ClusterError(RuntimeError):
    """A service failed to start or stopped unexpectedly."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    full_name: str
    address: str
    pid: int
    health: str
    log: Path
    restarts: int = 0
    sidecar: str = ""  # in the mesh: the sidecar's inbound address and identity


GATEWAY = "gateway"


def gateway_url(settings: Settings) -> str:
    return f"{'https' if settings.tls else 'http'}://{client_host(settings)}:{settings.gateway_port}"


def rest_url(settings: Settings) -> str:
    """Where REST callers come in: the edge in the mesh, else the gateway itself."""
    return edge_url(settings) if settings.mesh else gateway_url(settings)


def rest_verify(settings: Settings) -> str | bool:
    """What a REST client trusts (`requests`' `verify`): the mesh CA, the dev CA, or the system's."""
    if settings.mesh:
        return str(ca_file(settings))
    return str(DevPki.from_settings(settings).ca_path) if settings.tls else True


def gateway_state(settings: Settings, path: str = "/readyz", timeout: float = 1.0, url: str = "") -> str:
    """`SERVING` when the gateway (or the edge in front of it) answers `path` with 200, else why not."""
    url = url or gateway_url(settings)
    context = None
    if url.startswith("https"):
        context = edge_ssl_context(settings) if url.startswith(edge_url(settings)) else client_ssl_context(settings)
    try:
        with urllib.request.urlopen(url + path, timeout=timeout, context=context) as response:  # noqa: S310
            return "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"NOT_SERVING (HTTP {exc.code})"
    except OSError as exc:
        return f"UNREACHABLE ({exc})"


class Cluster:
    """`with Cluster(settings) as cluster:` starts every service (and, for the
    whole platform, the REST gateway) and stops them on exit."""

    def __init__(self, settings: Settings, services: list[str] | None = None, gateway: bool | None = None) -> None:
        self.settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        self.specs = [SERVICES[name] for name in (services or list(SERVICES))]
        self.gateway = services is None if gateway is None else gateway
        self.log_dir = self.settings.data_dir / "logs"
        self.infrastructure: EmbeddedInfrastructure | None = None
        # Each service runs `settings.workers` processes on one port (SO_REUSEPORT).
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.restarts: Counter[str] = Counter()
        self._crashes: dict[str, list[float]] = {}  # when each part last died, for the back-off
        # In the mesh (the default): every replica behind its Envoy sidecar, and the edge.
        self.sidecars = Sidecars(self.settings, self.log_dir) if self.settings.mesh else None

    def _environment(self) -> dict[str, str]:
        assert self.infrastructure is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
        # glibc gives every thread that allocates an arena of its own; the
        # threads of worker pools and asyncio's executor then leave freed
        # memory stranded in arenas the event loop never reuses (an invoice
        # import peaked ~25 MiB higher for it). Two arenas are plenty under the GIL.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        env.update(self.settings.as_environment())
        env.update(BMC_DATABASE_URL=self.infrastructure.database_url, BMC_REDIS_URL=self.infrastructure.redis_url)
        return env

    def _check_ports_free(self) -> None:
        """A port already taken would let health checks reach someone else's server."""
        ports = [(spec.name, spec.port(self.settings), "BMC_PORT_BASE") for spec in self.specs]
        ports += [
            (f"{spec.name} metrics", metrics_port(self.settings, spec.port_offset, replica), "BMC_PORT_BASE")
            for spec in self.specs
            for replica in self._replicas(spec)
        ]
        if self.gateway:
            ports.append((GATEWAY, self.settings.gateway_port, "BMC_GATEWAY_PORT"))
        if self.sidecars is not None:
            specs = [spec.name for spec in self.specs]
            ports += [(what, port, "BMC_PORT_BASE") for what, port in self.sidecars.ports(specs, self.gateway)]
        for name, port, setting in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # As the servers bind: connections of a previous run in TIME_WAIT do not count, listeners do.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.settings.bind_host, port))
                except OSError as exc:
                    raise ClusterError(
                        f"port {port} for {name} is in use (another `bmc up`?); stop it or set {setting}"
                    ) from exc

    def start(self, timeout: float = 90.0) -> None:
        self._check_ports_free()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.infrastructure = ensure_infrastructure(self.settings)
        ensure_dev_signing_key(self.settings)
        if self.settings.tls:
            pki = DevPki.from_settings(self.settings)
            for name in [*(s.name for s in self.specs), *CLIENTS]:
                pki.identity(name)
        if self.sidecars is not None:
            self.sidecars.start([spec.name for spec in self.specs], gateway=self.gateway)
            operator(self.settings)  # the CLI's certificate for the edge, before any client races to issue it
        for spec in self.specs:
            self._spawn(spec)
        self.wait_healthy(timeout)
        self._wait_routable([spec.name for spec in self.specs], timeout)
        if self.gateway:
            self._spawn_module(GATEWAY, "services.gateway.main", 1)
            deadline = time.monotonic() + timeout
            self._until(lambda: gateway_state(self.settings, "/healthz") == "SERVING", deadline,
                        f"the gateway did not answer on {gateway_url(self.settings)}")  # fmt: skip
            if self.sidecars is not None:  # until the edge answers ready: its sidecars found every service healthy
                self._until(lambda: gateway_state(self.settings, url=edge_url(self.settings)) == "SERVING", deadline,
                            f"the edge did not answer ready on {edge_url(self.settings)}")  # fmt: skip

    def _until(self, done: Callable[[], bool], deadline: float, failure: str) -> None:
        """Polls `done` while every process stays alive; ClusterError(`failure`) past `deadline`."""
        while not done():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(failure)
            time.sleep(0.1)

    def _spawn(self, spec: ServiceSpec) -> None:
        if self.sidecars is not None:  # one process per replica, each behind its own sidecar
            replicas = self.sidecars.spec.services[spec.name].replicas
            self.processes[spec.name] = [self._popen(spec.name, spec.module, r) for r in range(replicas)]
            return
        self._spawn_module(spec.name, spec.module, self.settings.workers)

    def _popen(self, name: str, module: str, replica: int = 0) -> subprocess.Popen[bytes]:
        env = {**self._environment(), "BMC_REPLICA": str(replica)}
        with (self.log_dir / f"{name}{f'-{replica}' if replica else ''}.log").open("ab") as log:
            # A `bmc up` killed outright takes its services with it (they would hold the ports).
            command = orphans.command([sys.executable, "-m", module])
            return subprocess.Popen(command, env=env | orphans.environment(), stdout=log, stderr=subprocess.STDOUT)

    def _respawn(self, name: str, index: int) -> subprocess.Popen[bytes]:
        """A new process in place of a dead one (in the mesh, the same replica)."""
        module = SERVICES[name].module if name in SERVICES else "services.gateway.main"
        return self._popen(name, module, index if self.sidecars is not None else 0)

    def _spawn_module(self, name: str, module: str, count: int) -> None:
        self.processes[name] = [self._popen(name, module) for _ in range(count)]

    def supervise(self) -> list[str]:
        """Restarts what died — a service process, the gateway, an embedded
        database — as ECS restarts a stopped task: each after a back-off that
        doubles with every crash of the last ten minutes (1 s up to 60 s); the
        others keep running. Returns what it restarted now."""
        restarted = []
        now = time.monotonic()
        if self.infrastructure is not None:
            for name in self.infrastructure.revive():
                self.restarts[name] += 1
                restarted.append(name)
        if self.sidecars is not None:
            for name in self.sidecars.revive():
                self.restarts[name] += 1
                restarted.append(name)
        for name, group in self.processes.items():
            for index, process in enumerate(group):
                if process.poll() is None:
                    continue
                crashes = [t for t in self._crashes.get(name, []) if now - t < 600]
                if crashes and now - crashes[-1] < min(60.0, 2.0 ** (len(crashes) - 1)):
                    continue  # backing off
                self._crashes[name] = [*crashes, now]
                group[index] = self._respawn(name, index)
                self.restarts[name] += 1
                restarted.append(name)
        return restarted

    def kill(self, name: str) -> None:
        """Kills one service abruptly (SIGKILL), as a crash would."""
        for process in self.processes[name]:
            process.kill()
            process.wait()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Starts again those processes of a service that were killed or stopped
        (its other replicas keep serving) and waits until it is healthy."""
        group = self.processes[name]
        for index, process in enumerate(group):
            if process.poll() is not None:
                group[index] = self._respawn(name, index)
        self.wait_healthy(timeout, [SERVICES[name]])
        self._wait_routable([name], timeout)

    def _wait_routable(self, names: list[str], timeout: float) -> None:
        """In the mesh: until clients' calls through the edge reach every replica."""
        if self.sidecars is not None:
            try:
                self.sidecars.wait_routable(names, timeout)
            except TimeoutError as exc:
                raise ClusterError(str(exc)) from exc

    def scrape_targets(self) -> dict[str, list[tuple[str, str]]]:
        """Every Prometheus endpoint, by job: each process's /metrics
        ("services") and each sidecar's /stats/prometheus ("envoy"), as
        (process or sidecar name, host:port)."""
        host = client_host(self.settings)
        processes = [
            (f"{spec.name}-{replica}", f"{host}:{metrics_port(self.settings, spec.port_offset, replica)}")
            for spec in self.specs
            for replica in self._replicas(spec)
        ]
        if self.gateway:
            processes.append((GATEWAY, f"{host}:{metrics_port(self.settings, GATEWAY_OFFSET)}"))
        jobs = {"services": processes}
        if self.sidecars is not None:
            jobs["envoy"] = [(name, f"127.0.0.1:{port}") for name, port in self.sidecars.admin_ports().items()]
        return jobs

    def _replicas(self, spec: ServiceSpec) -> range:
        return range(self.sidecars.spec.services[spec.name].replicas if self.sidecars is not None else 1)

    def wait_healthy(self, timeout: float, specs: list[ServiceSpec] | None = None) -> None:
        """Until every replica of `specs` (default all) answers SERVING on its own port."""
        deadline = time.monotonic() + timeout
        pending = [(spec, replica) for spec in specs or self.specs for replica in self._replicas(spec)]
        while pending:
            self.check_alive()
            pending = [(spec, r) for spec, r in pending if health_of(self.settings, spec, r) != "SERVING"]
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{s.name}-{r}" if r else s.name for s, r in pending)
                raise ClusterError(f"not healthy after {timeout:.0f}s: {names}; see {self.log_dir}")
            if pending:
                time.sleep(0.2)

    def check_alive(self) -> None:
        for name, process in ((n, p) for n, group in self.processes.items() for p in group):
            code = process.poll()
            if code is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise ClusterError(f"{name} exited with code {code}:\n" + "\n".join(tail))

    def statuses(self) -> list[ServiceStatus]:
        """Each process (in the mesh, each replica with its sidecar), the gateway, and the edge."""
        rows = []
        sidecars = self.sidecars
        for spec in self.specs:
            for replica in self._replicas(spec):
                name, address, sidecar = spec.name, spec.target(self.settings), ""
                if sidecars is not None:
                    name, address = f"{spec.name}-{replica}", f"127.0.0.1:{sidecars.place.app(spec.name, replica)}"
                    host, port = sidecars.place.inbound(spec.name, replica)
                    sidecar = f"{host}:{port} {sidecars.spec.identity(spec.name)}"
                rows.append(
                    ServiceStatus(
                        name=name,
                        full_name=spec.full_name,
                        address=address,
                        pid=self.processes[spec.name][replica].pid,
                        health=health_of(self.settings, spec, replica),
                        log=self.log_dir / f"{spec.name}{f'-{replica}' if replica else ''}.log",
                        restarts=self.restarts[spec.name],
                        sidecar=sidecar,
                    )
                )
        if GATEWAY in self.processes:
            rows.append(
                ServiceStatus(
                    name=GATEWAY,
                    full_name="REST gateway (OpenAPI: /docs)",
                    address=gateway_url(self.settings),
                    pid=self.processes[GATEWAY][0].pid,
                    health=gateway_state(self.settings),
                    log=self.log_dir / f"{GATEWAY}.log",
                    restarts=self.restarts[GATEWAY],
                    sidecar=f"outbound only {sidecars.spec.identity(GATEWAY)}" if sidecars is not None else "",
                )
            )
            if sidecars is not None:
                grpc_host, grpc_port = sidecars.place.edge_grpc
                rows.append(
                    ServiceStatus(
                        name="edge",
                        full_name=f"entry: REST; gRPC {grpc_host}:{grpc_port} (mTLS)",
                        address=edge_url(self.settings),
                        pid=sidecars.processes["edge"].pid,
                        health=gateway_state(self.settings, url=edge_url(self.settings)),
                        log=self.log_dir / "envoy-edge.log",
                        restarts=self.restarts["envoy edge"],
                        sidecar=sidecars.spec.identity("edge"),
                    )
                )
        return rows

    def stop(self) -> None:
        every = [p for group in self.processes.values() for p in group]
        for process in every:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 5
        for process in every:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.sidecars is not None:
            self.sidecars.stop()
        if self.infrastructure is not None:
            self.infrastructure.close()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
