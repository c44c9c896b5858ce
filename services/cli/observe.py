"""A real Prometheus (Debian's `prometheus` package, installed by `make
setup`) watching a running platform: every process's /metrics and every
Envoy sidecar's /stats/prometheus, scraped every 5 s, with the SLO alert
rules of ops/prometheus/. Its data lives under the data directory.

    bmc up --observe      # then http://localhost:<BMC_PORT_BASE + 8>/alerts
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from services.kit.settings import Settings

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "slo-rules.yml"
SCRAPE_SECONDS = 5
PROMETHEUS_OFFSET = 8  # of BMC_PORT_BASE: a port of the plan no process takes


class ObserverError(RuntimeError):
    """Prometheus is not installed, or did not start."""


class Prometheus:
    """`with Prometheus(settings, cluster.scrape_targets()) as prometheus:`"""

    def __init__(self, settings: Settings, jobs: dict[str, list[tuple[str, str]]], url: str = "") -> None:
        """To start one: the platform's `jobs` (`Cluster.scrape_targets`); to read
        one already running: its `url`, or this machine's by default."""
        self.directory = settings.data_dir / "prometheus"
        self.port = settings.port_base + PROMETHEUS_OFFSET
        self.url = url.rstrip("/") or f"http://127.0.0.1:{self.port}"
        self._jobs = jobs
        self._process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        paths = {"services": "/metrics", "envoy": "/stats/prometheus"}
        return {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": paths[job],
                    "static_configs": [{"targets": [target], "labels": {"process": name}} for name, target in targets],
                }
                for job, targets in self._jobs.items()
            ],
        }

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ObserverError("prometheus is not installed: `make setup` installs Debian's package")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML: no YAML library needed
        log = (self.directory / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2d",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ObserverError(f"prometheus exited: see {self.directory / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):  # noqa: S310 - loopback
                    return
            except OSError:
                time.sleep(0.2)
        raise ObserverError(f"prometheus not ready within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def _api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=10) as response:  # noqa: S310 - loopback
            answer: dict[str, Any] = json.load(response)
        if answer.get("status") != "success":
            raise ObserverError(f"{path}: {answer.get('error')}")
        return answer["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...}, "value": [time, "value"]}, ...]."""
        result: list[dict[str, Any]] = self._api(f"query?{urllib.parse.urlencode({'query': expression})}")["result"]
        return result

    def series(self, expression: str, seconds: int, step: int, *labels: str) -> dict[tuple[str, ...], list[float]]:
        """A range query over the last `seconds`: each series' values, keyed by `labels`."""
        end = time.time()
        query = urllib.parse.urlencode({"query": expression, "start": end - seconds, "end": end, "step": step})
        return {
            tuple(s["metric"].get(label, "") for label in labels): [float(v) for _, v in s["values"]]
            for s in self._api(f"query_range?{query}")["result"]
        }

    def rule_names(self) -> list[str]:
        """The names of the alerting and recording rules loaded."""
        return [rule["name"] for group in self._api("rules")["groups"] for rule in group["rules"]]

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
