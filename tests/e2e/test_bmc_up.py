"""`bmc up` as a user runs it: a real command, real processes, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from services.kit.topology import SERVICES
from tests.conftest import free_port_base, grpcurl

pytestmark = pytest.mark.e2e


def test_bmc_up_starts_every_service_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    base = free_port_base()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    env.update(
        BMC_DATA_DIR=str(tmp_path),
        BMC_PORT_BASE=str(base),
        BMC_GATEWAY_PORT=str(base),
        BMC_LOG_FORMAT="json",
        COLUMNS="200",
    )
    bmc = Path(sys.executable).parent / "bmc"
    process = subprocess.Popen([str(bmc), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        for line in process.stdout:
            output.append(line)
            if "ready; press Ctrl-C" in line:
                break
            assert time.monotonic() < deadline, "".join(output)
        text = "".join(output)
        assert "ready; press Ctrl-C" in text, text
        children = psutil.Process(process.pid).children(recursive=True)
        service_pids = [c.pid for c in children if any("services." in part for part in c.cmdline())]
        assert len(service_pids) == len(SERVICES) + 1  # and the REST gateway
        assert f"http://localhost:{base}" in text
        with urllib.request.urlopen(f"http://localhost:{base}/readyz", timeout=5) as ready:
            assert json.load(ready)["status"] == "ready"
        for spec in SERVICES.values():
            assert f"localhost:{base + spec.port_offset}" in text
            listed = grpcurl("-plaintext", f"localhost:{base + spec.port_offset}", "list")
            assert spec.full_name in listed.stdout, listed.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        rest = process.stdout.read()
        assert "all services stopped" in rest
        for pid in service_pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            process.kill()


def _bmc_up(tmp_path: Path) -> tuple[subprocess.Popen[str], int, list[str]]:
    base = free_port_base()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    env.update(BMC_DATA_DIR=str(tmp_path), BMC_PORT_BASE=str(base), BMC_GATEWAY_PORT=str(base), COLUMNS="200")
    bmc = Path(sys.executable).parent / "bmc"
    process = subprocess.Popen([str(bmc), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if "ready; press Ctrl-C" in line:
            break
    return process, base, output


def _child(process: subprocess.Popen[str], marker: str) -> psutil.Process:
    return next(c for c in psutil.Process(process.pid).children(recursive=True) if marker in " ".join(c.cmdline()))


def _until_line(process: subprocess.Popen[str], text: str, output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if text in line:
            return
    raise AssertionError("".join(output))


def test_bmc_up_restarts_what_crashes_and_keeps_the_rest_running(tmp_path: Path) -> None:
    """kill -9 of a service (its render processes go with it) and of the
    embedded Redis: each is restarted, the others never stop, and the
    platform answers again."""
    process, base, output = _bmc_up(tmp_path)
    try:
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
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{base}/readyz", timeout=5) as ready:
                    if json.load(ready)["status"] == "ready":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not ready again after the restarts"
            time.sleep(0.5)
        assert [_child(process, f"services.{name}.main").pid for name in ("invoice", "product", "commission")] == others
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
