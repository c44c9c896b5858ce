"""The platform as real processes: reflection, health, databases, and the
interceptor chain seen from real gRPC clients (grpcurl and Python stubs)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.kit.clients import bearer, sync_channel
from services.kit.database import database_name, service_url
from services.kit.topology import SERVICES
from tests.conftest import ROOT, Platform, free_port_base, grpcurl

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", list(SERVICES))
def test_reflection_lists_the_service(platform: Platform, service: str) -> None:
    result = grpcurl("-plaintext", platform.target(service), "list")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert SERVICES[service].full_name in listed
    assert "grpc.health.v1.Health" in listed


@pytest.mark.parametrize("service", list(SERVICES))
def test_reflection_describes_every_method(platform: Platform, service: str) -> None:
    full_name = SERVICES[service].full_name
    result = grpcurl("-plaintext", platform.target(service), "describe", full_name)
    assert result.returncode == 0, result.stderr
    for method in SERVICES[service].descriptor.methods:
        assert f"rpc {method.name}" in result.stdout


@pytest.mark.parametrize("service", list(SERVICES))
def test_health_reports_serving(platform: Platform, service: str) -> None:
    for name in ("", SERVICES[service].full_name):
        result = grpcurl(
            "-plaintext", "-d", json.dumps({"service": name}), platform.target(service), "grpc.health.v1.Health/Check"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_service_has_its_own_migrated_database(platform: Platform, service: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    assert platform.cluster.infrastructure is not None
    url = service_url(platform.cluster.infrastructure.database_url, database_name(platform.settings, service))

    async def revision() -> str:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return str((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one())
        finally:
            await engine.dispose()

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    assert asyncio.run(revision()) == ScriptDirectory.from_config(config).get_current_head()


def _error(
    exc: grpc.RpcError,
) -> tuple[grpc.StatusCode, list[error_details_pb2.BadRequest], list[error_details_pb2.ErrorInfo]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status details"
    bad, info = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            message = error_details_pb2.BadRequest()
            detail.Unpack(message)
            bad.append(message)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            message = error_details_pb2.ErrorInfo()
            detail.Unpack(message)
            info.append(message)
    return exc.code(), bad, info


def test_protovalidate_violation_is_invalid_argument_naming_the_field(platform: Platform) -> None:
    token = platform.token("operator")
    with sync_channel(platform.settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.BatchGetProducts(
                product_service_pb2.BatchGetProductsRequest(names=["products/OK-1", "not-a-name"]),
                metadata=bearer(token),
                timeout=10,
            )
    code, bad, _ = _error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in bad[0].field_violations] == [("names[1]", "string.pattern")]


def test_nested_violations_name_the_full_path(platform: Platform) -> None:
    request = {
        "invoice": {
            "number": "F-1",
            "cufe": "ab",
            "seller": {"id": {"type": "IDENTIFICATION_TYPE_NIT", "number": "800197268"}},
        }
    }
    result = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {platform.token('operator')}",
        "-d",
        json.dumps(request),
        "-format-error",
        platform.target("invoice"),
        "bmc.invoice.v1.InvoiceService/RegisterInvoice",
    )
    assert result.returncode != 0
    error = json.loads(result.stderr)
    assert error["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    fields = {v["field"] for v in error["details"][0]["field_violations"]}
    assert {"invoice.cufe", "invoice.seller.id", "invoice.buyer", "invoice.lines", "invoice.issue_date"} <= fields


def test_valid_request_with_role_reaches_the_handler(platform: Platform) -> None:
    """Past authentication, authorisation and validation, a service whose
    issue has not landed answers UNIMPLEMENTED with an ErrorInfo."""
    with sync_channel(platform.settings, "commission") as channel:
        call = channel.unary_unary(
            "/bmc.commission.v1.CommissionService/ListTariffSchedules",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        from bmc.commission.v1 import commission_service_pb2

        try:
            call(
                commission_service_pb2.ListTariffSchedulesRequest(),
                metadata=bearer(platform.token("auditor")),
                timeout=10,
            )
        except grpc.RpcError as exc:
            code, _, info = _error(exc)
            if code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            assert info[0].reason == "NOT_IMPLEMENTED"


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_the_container_health_check_answers_for_a_running_service_and_not_for_a_missing_one(
    platform: Platform,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")} | platform.settings.as_environment()
    probe = [sys.executable, "-m", "services.kit.probe"]
    ran = subprocess.run([*probe, "product"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (ran.returncode, ran.stdout.strip()) == (0, "SERVING"), ran.stderr
    elsewhere = env | {"BMC_PORT_BASE": str(free_port_base())}
    ran = subprocess.run([*probe, "product"], env=elsewhere, capture_output=True, text=True, timeout=30, check=False)
    assert ran.returncode == 1
    assert ran.stdout.startswith("UNREACHABLE")
