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
from services.kit.settings import Settings
from tests.integration.clients import Client


class Catalog(Client):
    """A product stub with an operator token, and shortcuts."""

    def __init__(self, settings: Settings, role: str = "operator", tenant: str = "") -> None:
        super().__init__(settings, "product", product_service_pb2_grpc.ProductServiceStub, role, tenant)

    def create(
        self, code: str, name: str, category: int = product_pb2.CATEGORY_AGRICULTURAL, **fields: object
    ) -> product_pb2.Product:
        product = product_pb2.Product(
            display_name=name,
            category=category,  # type: ignore[arg-type]
            processing_level=fields.pop("processing_level", product_pb2.PROCESSING_LEVEL_NONE),  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )
        return self.CreateProduct(product_service_pb2.CreateProductRequest(product=product, product_id=code))  # type: ignore[no-any-return]

    def progress_past(self, name: str, rows: int, timeout: float = 60) -> product_pb2.ImportProductsMetadata:
        """An import's metadata once it has committed more than `rows` rows
        (polled closely: a kill test stops the import right after)."""
        meta = product_pb2.ImportProductsMetadata()
        deadline = time.monotonic() + timeout
        while meta.progress.done < rows:
            assert time.monotonic() < deadline, f"{name}: {meta.progress.done} of {rows} rows after {timeout} s"
            self.GetOperation(operations_pb2.GetOperationRequest(name=name)).metadata.Unpack(meta)
            time.sleep(0.02)
        return meta

    def import_and_wait(self, uris: list[str], timeout: float = 120, **kw: object) -> operations_pb2.Operation:
        operation = self.ImportProducts(product_service_pb2.ImportProductsRequest(uris=uris, **kw))
        return self.wait(operation.name, timeout)


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
