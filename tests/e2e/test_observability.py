"""What operators rely on when something goes wrong: structured logs that
carry trace and request ids, and health that follows the databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.cli.cluster import health_of
from services.kit.clients import bearer, sync_channel
from services.kit.topology import SERVICES
from tests.conftest import Platform, free_port_base, make_settings

pytestmark = pytest.mark.e2e


def test_rpc_log_lines_carry_request_and_trace_ids(platform: Platform) -> None:
    request_id = uuid.uuid4().hex
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{'1' * 16}-01"
    with sync_channel(platform.settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetProduct(
                product_service_pb2.GetProductRequest(name="products/ARROZ"),
                metadata=bearer(
                    platform.token("auditor"), [("x-request-id", request_id), ("traceparent", traceparent)]
                ),
                timeout=10,
            )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in platform.logs("product").splitlines() if line.startswith("{")]
        matching = [line for line in lines if line.get("request_id") == request_id and line.get("event") == "rpc"]
        if matching:
            break
        time.sleep(0.1)
    assert matching, "no rpc log line with the request id"
    line = matching[0]
    assert line["trace_id"] == trace_id, "the caller's W3C trace must continue in the service"
    assert line["method"] == "/bmc.product.v1.ProductService/GetProduct"
    assert line["code"] == "NOT_FOUND"
    assert line["subject"] == "tester"
    assert line["service"] == "product"


def test_health_follows_redis_down_and_back(tmp_path: Path) -> None:
    """A service whose Redis goes away reports NOT_SERVING, and SERVING again when it returns."""
    redis_port = free_port_base() + 7
    redis_server = Path(sys.executable).parent / "redis-server"

    def start_redis() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [str(redis_server), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        return process

    redis_process = start_redis()
    settings = make_settings(tmp_path, "embedded", redis_url=f"redis://127.0.0.1:{redis_port}/0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")}
    env.update(settings.as_environment())
    service = subprocess.Popen(
        [sys.executable, "-m", "services.product.main"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    spec = SERVICES["product"]

    def wait_for(state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (observed := health_of(settings, spec)) != state:
            assert service.poll() is None, "service exited"
            assert time.monotonic() < deadline, f"health stayed {observed}, wanted {state}"
            time.sleep(0.2)

    try:
        wait_for("SERVING", timeout=60)
        redis_process.terminate()
        redis_process.wait()
        wait_for("NOT_SERVING")
        redis_process = start_redis()
        wait_for("SERVING")
    finally:
        service.terminate()
        service.wait(timeout=15)
        redis_process.terminate()
        redis_process.wait()
