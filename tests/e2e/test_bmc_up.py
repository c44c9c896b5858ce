"""`bmc up` as a user runs it: a real command, real processes, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from services.cli.observe import PROMETHEUS_OFFSET
from services.kit.postgres_guard import postmaster_pid
from services.kit.topology import SERVICES
from tests.conftest import free_port_base, grpcurl, load_mesh

BMC = Path(sys.executable).parent / "bmc"

pytestmark = pytest.mark.e2e


def _environment(tmp_path: Path, base: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    env.update(
        BMC_DATA_DIR=str(tmp_path),
        BMC_PORT_BASE=str(base),
        BMC_GATEWAY_PORT=str(base),
        BMC_EDGE_PORT=str(base + 443),
        BMC_LOG_FORMAT="json",
        COLUMNS="250",
    )
    return env


def _bmc_up(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    base = free_port_base()
    process = subprocess.Popen(
        [str(BMC), "up", *options],
        env=_environment(tmp_path, base), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    for line in process.stdout:
        output.append(line)
        if "ready; press Ctrl-C" in line:
            break
        assert time.monotonic() < deadline, "".join(output)
    assert "ready; press Ctrl-C" in "".join(output), "".join(output)
    return process, base, output


def _ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5, context=context) as ready:  # noqa: S310
            return bool(json.load(ready)["status"] == "ready")
    except OSError:
        return False


def _stops_everything(process: subprocess.Popen[str], children: list[psutil.Process]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert process.stdout is not None
    assert "all services stopped" in process.stdout.read()
    for child in children:
        assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE


def test_bmc_up_runs_every_replica_behind_its_sidecar_restarts_what_crashes_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    """By default: each replica behind its Envoy (shown with its identity),
    the gateway's sidecar and the edge; REST and operators' grpcurl come in
    through the edge, exactly as `bmc up` says; with --observe, Prometheus
    beside them. Then kill -9 of a service (its render processes go with it),
    of the embedded Redis and of a sidecar: each is restarted, the others
    never stop, and the platform answers again. Ctrl-C stops everything."""
    process, base, output = _bmc_up(tmp_path, "--observe")
    try:
        text = "".join(output)
        children = psutil.Process(process.pid).children(recursive=True)
        spec = load_mesh()
        replicas = sum(declared.replicas for declared in spec.services.values())
        assert len(_mains(children)) == replicas + 1  # and the gateway
        assert len([c for c in children if "envoy" in c.name()]) == replicas + 2  # the gateway's sidecar, the edge
        for name in SERVICES:
            assert spec.identity(name) in text
        assert f"https://localhost:{base + 443}" in text
        context = ssl.create_default_context(cafile=str(tmp_path / "pki" / "mesh" / "ca.pem"))
        deadline = time.monotonic() + 30
        while not _ready(f"https://localhost:{base + 443}", context):
            assert time.monotonic() < deadline, "the edge never answered ready"
            time.sleep(0.5)
        env = _environment(tmp_path, base)
        flags = subprocess.run([str(BMC), "mesh", "operator"], env=env, capture_output=True, text=True, check=True)
        listed = grpcurl(*flags.stdout.split(), f"localhost:{base + 444}", "list")
        for name in SERVICES.values():
            assert name.full_name in listed.stdout, listed.stderr
        assert grpcurl(f"localhost:{base + 444}", "list").returncode != 0, "no client certificate, no entry"
        prometheus = f"http://127.0.0.1:{base + PROMETHEUS_OFFSET}"
        assert f"Prometheus: {prometheus}" in text
        with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=5) as ready:  # noqa: S310 - loopback
            assert ready.status == 200

        certificate = _child(process, "services.certificate.main")
        renderers = certificate.children(recursive=True)
        assert renderers, "the render processes run"
        others = [_child(process, f"services.{name}.main").pid for name in ("invoice", "product", "commission")]
        certificate.kill()
        _until_line(process, "certificate stopped unexpectedly; restarted", output)
        time.sleep(1)
        assert [r.pid for r in renderers if r.is_running() and r.status() != psutil.STATUS_ZOMBIE] == []
        _child(process, "redis-server").kill()
        _until_line(process, "redis stopped unexpectedly; restarted", output)
        _child(process, "product-1.json").kill()
        _until_line(process, "envoy product-1 stopped unexpectedly; restarted", output)
        deadline = time.monotonic() + 60
        while not _ready(f"http://localhost:{base}"):
            assert time.monotonic() < deadline, "not ready again after the restarts"
            time.sleep(0.5)
        assert [_child(process, f"services.{name}.main").pid for name in ("invoice", "product", "commission")] == others
        _stops_everything(process, psutil.Process(process.pid).children(recursive=True))
    finally:
        if process.poll() is None:
            process.kill()


def test_bmc_up_without_the_mesh_serves_each_service_on_its_own_port(tmp_path: Path) -> None:
    process, base, output = _bmc_up(tmp_path, "--no-mesh")
    try:
        text = "".join(output)
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(_mains(children)) == len(SERVICES) + 1
        assert not [c for c in children if "envoy" in c.name()]
        assert f"http://localhost:{base}" in text
        assert _ready(f"http://localhost:{base}")
        for spec in SERVICES.values():
            assert f"localhost:{base + spec.port_offset}" in text
            listed = grpcurl("-plaintext", f"localhost:{base + spec.port_offset}", "list")
            assert spec.full_name in listed.stdout, listed.stderr
        _stops_everything(process, children)
    finally:
        if process.poll() is None:
            process.kill()


def _mains(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The services' and the gateway's processes (`python -m services.<name>.main`)."""
    return [p for p in processes if any(a.startswith("services.") and a.endswith(".main") for a in p.cmdline())]


def _child(process: subprocess.Popen[str], marker: str) -> psutil.Process:
    return next(c for c in psutil.Process(process.pid).children(recursive=True) if marker in " ".join(c.cmdline()))


def _until_line(process: subprocess.Popen[str], text: str, output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if text in line:
            return
    raise AssertionError("".join(output))


def test_a_bmc_up_killed_outright_takes_its_services_sidecars_and_embedded_servers_with_it(tmp_path: Path) -> None:
    process, _, _ = _bmc_up(tmp_path)
    children = [
        c
        for c in psutil.Process(process.pid).children(recursive=True)
        if c.name() in ("envoy", "redis-server") or "services." in " ".join(c.cmdline())
    ]
    assert len(children) >= len(SERVICES) + 2
    assert [c for c in children if c.name() == "redis-server"], "the embedded Redis is among them"
    # pg_ctl detaches PostgreSQL: it is no child, its guard stops it.
    postmaster = postmaster_pid(tmp_path / "postgres")
    assert postmaster is not None
    process.kill()  # SIGKILL: no chance to stop anything itself
    process.wait()
    _, alive = psutil.wait_procs([*children, psutil.Process(postmaster)], timeout=15)
    assert [c.pid for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []
    assert postmaster_pid(tmp_path / "postgres") is None
    assert "database system is shut down" in (tmp_path / "postgres" / "log").read_text(), "a clean shutdown"
