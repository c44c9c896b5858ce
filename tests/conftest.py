"""Fixtures shared by the suite: free ports, settings, and running platforms
on both backends (embedded PostgreSQL/Redis, and the machine's own)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from services.cli.cluster import Cluster
from services.cli.commissions import ensure_uvt
from services.cli.traces import Collector, collector
from services.dian import calendar
from services.kit.database import database_name, drop_database
from services.kit.metrics import metrics_port
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from services.kit.topology import SERVICES
from services.mesh.render import local_placement
from services.mesh.sidecars import listening_ports
from services.mesh.spec import load as load_mesh

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MACHINE_DATABASE_URL = os.environ.get("BMC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MACHINE_REDIS_URL = os.environ.get("BMC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(mesh: bool = True) -> int:
    """A base whose ports (base for the gateway, base+1..base+9 for services,
    their /metrics, and with the mesh every port of its plan) are all free now."""
    spec = load_mesh() if mesh else None
    for _ in range(200):
        # Below Linux's ephemeral range (32768 up): an outgoing connection made
        # between this check and the services binding cannot take one of them.
        base = random.randrange(20000, 32000, 10)
        ports = [base + offset for offset in range(10)]
        ports += [metrics_port(Settings(port_base=base), offset, r) for offset in range(7) for r in range(3)]
        if spec is not None:
            place = local_placement(base, base, Path("."), base + 443)
            ports += [port for _, port in listening_ports(spec, place, list(SERVICES), gateway=True)]
        if all(_port_free(port) for port in ports):
            return base
    raise RuntimeError("no free port range")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Platform:
    """A running platform and how to reach it."""

    backend: str
    settings: Settings
    cluster: Cluster
    traces: Collector | None = None  # where its processes export their spans (the shared platform's)

    def target(self, service: str) -> str:
        return SERVICES[service].target(self.settings)

    def logs(self, service: str) -> str:
        """What every replica of `service` logged (`product.log`, `product-1.log`…)."""
        return "".join(p.read_text() for p in sorted(self.cluster.log_dir.glob(f"{service}*.log")))

    def token(self, *roles: str, tenant: str = "", subject: str = "tester") -> str:
        return mint_token(self.settings, subject=subject, roles=list(roles), tenant=tenant)


def make_settings(tmp: Path, backend: str, **overrides: object) -> Settings:
    base = free_port_base(mesh=bool(overrides.get("mesh", True)))
    values: dict[str, object] = {
        "data_dir": tmp,
        "port_base": base,
        "gateway_port": base,
        "edge_port": base + 443,
        "log_format": "json",
        "shutdown_grace_seconds": 1.0,
        "readiness_interval_seconds": 0.5,
        # Tests write their catalog files under pytest's temporary directories.
        "import_roots": tempfile.gettempdir(),
    }
    if backend == "machine":
        values.update(
            database_url=MACHINE_DATABASE_URL,
            redis_url=MACHINE_REDIS_URL,
            db_prefix=f"bmct{uuid.uuid4().hex[:8]}_",
            redis_prefix=f"bmct:{uuid.uuid4().hex[:8]}:",
        )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def machine_backend_available() -> str | None:
    """Why the machine's PostgreSQL/Redis cannot be used, or None."""
    if not _reachable("127.0.0.1", 5432):
        return "no PostgreSQL on 127.0.0.1:5432"
    if not _reachable("127.0.0.1", 6379):
        return "no Redis on 127.0.0.1:6379"
    return None


def cleanup_machine_backend(settings: Settings) -> None:
    if not settings.database_url:
        return
    for name in SERVICES:
        asyncio.run(drop_database(settings.database_url, database_name(settings, name)))
    client = redis.Redis.from_url(settings.redis_url or MACHINE_REDIS_URL)
    for key in client.scan_iter(match=f"{settings.redis_prefix}*"):
        client.delete(key)


@pytest.fixture(scope="session", params=["embedded", "machine"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """All five services as real processes, once per backend."""
    backend: str = request.param
    if backend == "machine" and (why := machine_backend_available()):
        pytest.skip(f"machine backend unavailable: {why}")
    with collector() as (traces, endpoint):
        settings = make_settings(tmp_path_factory.mktemp(f"platform-{backend}"), backend, otlp_endpoint=endpoint)
        cluster = Cluster(settings)
        with cluster:
            # The suite runs on any date: a year the reference data does not reach gets a provisional UVT.
            ensure_uvt(cluster.settings, calendar.today().year)
            yield Platform(backend, cluster.settings, cluster, traces)
    if backend == "machine":
        cleanup_machine_backend(settings)


def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout, check=False)
