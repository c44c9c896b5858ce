"""Helpers for talking to a running product service in tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings
from services.kit.tokens import mint_token


class Catalog:
    """A product stub with an operator token, and shortcuts."""

    def __init__(self, settings: Settings, role: str = "operator", tenant: str = "") -> None:
        self.channel = sync_channel(settings, "product")
        self.stub = product_service_pb2_grpc.ProductServiceStub(self.channel)
        self.metadata = bearer(mint_token(settings, subject=f"test-{role}", roles=[role], tenant=tenant))

    def __getattr__(self, method: str) -> object:
        rpc = getattr(self.stub, method)
        return lambda request, **kw: rpc(request, metadata=self.metadata, timeout=kw.pop("timeout", 30), **kw)

    def create(
        self, code: str, name: str, category: int = product_pb2.CATEGORY_AGRICULTURAL, **fields: object
    ) -> product_pb2.Product:
        product = product_pb2.Product(
            display_name=name,
            category=category,  # type: ignore[arg-type]
            processing_level=fields.pop("processing_level", product_pb2.PROCESSING_LEVEL_NONE),  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )
        return self.CreateProduct(product_service_pb2.CreateProductRequest(product=product, product_id=code))  # type: ignore[no-any-return, operator]

    def import_and_wait(self, uris: list[str], timeout: float = 120, **kw: object) -> operations_pb2.Operation:
        operation = self.ImportProducts(product_service_pb2.ImportProductsRequest(uris=uris, **kw))  # type: ignore[operator]
        return self.wait(operation.name, timeout)

    def wait(self, name: str, timeout: float = 120) -> operations_pb2.Operation:
        deadline = time.monotonic() + timeout
        while True:
            operation = self.GetOperation(operations_pb2.GetOperationRequest(name=name))  # type: ignore[operator]
            if operation.done:
                return operation  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, f"import {name} not done after {timeout}s"
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()


@contextmanager
def catalog(settings: Settings, role: str = "operator", tenant: str = "") -> Iterator[Catalog]:
    client = Catalog(settings, role, tenant)
    try:
        yield client
    finally:
        client.close()


def result_of(operation: operations_pb2.Operation) -> product_pb2.ImportProductsResponse:
    assert not operation.HasField("error"), operation.error
    response = product_pb2.ImportProductsResponse()
    assert operation.response.Unpack(response)
    return response


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [(v.field, v.reason) for v in bad.field_violations]
    return []


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""
