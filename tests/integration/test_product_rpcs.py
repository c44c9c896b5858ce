"""Every ProductService RPC against real PostgreSQL and Redis, good and bad input."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from tests.conftest import Platform
from tests.integration.product_helpers import catalog, reason, violations


def _code(prefix: str = "T") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10].upper()}"


def test_create_then_get_returns_the_product_with_derived_fields(platform: Platform) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        created = cat.create(code, "Maíz amarillo tipo 1", unit_code="TNE", subcategory="cereals/maize")
        got = cat.GetProduct(product_service_pb2.GetProductRequest(name=f"products/{code}"))
    assert created.name == f"products/{code}"
    assert got.display_name == "Maíz amarillo tipo 1"
    assert got.eligible
    assert got.state == product_pb2.PRODUCT_STATE_ACTIVE
    assert got.revision == 1
    assert got.etag == created.etag


def test_industrial_products_are_not_eligible(platform: Platform) -> None:
    with catalog(platform.settings) as cat:
        sugar = cat.create(
            _code(), "Azúcar refinada", product_pb2.CATEGORY_AGROINDUSTRIAL,
            processing_level=product_pb2.PROCESSING_LEVEL_INDUSTRIAL,
        )  # fmt: skip
        milk = cat.create(
            _code(),
            "Leche cruda",
            product_pb2.CATEGORY_LIVESTOCK,
            processing_level=product_pb2.PROCESSING_LEVEL_PRIMARY,
        )
    assert not sugar.eligible
    assert milk.eligible


def test_create_twice_is_already_exists(platform: Platform) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        cat.create(code, "Arroz paddy")
        with pytest.raises(grpc.RpcError) as caught:
            cat.create(code, "Arroz paddy")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_create_without_category_names_the_field(platform: Platform) -> None:
    with catalog(platform.settings) as cat, pytest.raises(grpc.RpcError) as caught:
        cat.CreateProduct(
            product_service_pb2.CreateProductRequest(
                product_id=_code(), product=product_pb2.Product(display_name="Papa")
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [("product.category", "INVALID_CATEGORY")]


def test_unknown_code_is_not_found(platform: Platform) -> None:
    with catalog(platform.settings) as cat, pytest.raises(grpc.RpcError) as caught:
        cat.GetProduct(product_service_pb2.GetProductRequest(name="products/DOES-NOT-EXIST"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(caught.value) == "PRODUCT_NOT_FOUND"


def test_batch_get_keeps_request_order_and_reports_missing(platform: Platform) -> None:
    a, b = _code("A"), _code("B")
    with catalog(platform.settings, role="broker", tenant="acme") as reader, catalog(platform.settings) as cat:
        cat.create(a, "Cacao en grano")
        cat.create(b, "Café cereza")
        response = reader.BatchGetProducts(
            product_service_pb2.BatchGetProductsRequest(names=[f"products/{b}", "products/NOPE-1", f"products/{a}"])
        )
    assert [p.code for p in response.products] == [b, a]
    assert list(response.missing) == ["products/NOPE-1"]


@pytest.mark.parametrize(("names", "field"), [([], "names"), ([f"products/X{i}" for i in range(1001)], "names")])
def test_batch_get_empty_or_too_long_is_invalid(platform: Platform, names: list[str], field: str) -> None:
    with catalog(platform.settings) as cat, pytest.raises(grpc.RpcError) as caught:
        cat.BatchGetProducts(product_service_pb2.BatchGetProductsRequest(names=names))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][0] == field


def test_update_with_mask_changes_only_masked_fields_and_keeps_history(platform: Platform) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        created = cat.create(code, "Panela", product_pb2.CATEGORY_AGROINDUSTRIAL, description="bloque")
        update = product_pb2.Product(
            name=f"products/{code}", display_name="Panela pulverizada", description="ignored", etag=created.etag
        )
        updated = cat.UpdateProduct(
            product_service_pb2.UpdateProductRequest(
                product=update, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
            )
        )
        history = cat.ListProductRevisions(product_service_pb2.ListProductRevisionsRequest(name=f"products/{code}"))
    assert updated.display_name == "Panela pulverizada"
    assert updated.description == "bloque"
    assert updated.revision == 2
    assert [r.product.revision for r in history.revisions] == [2, 1]
    assert history.revisions[1].product.display_name == "Panela"
    assert history.revisions[0].change == "update"


def test_update_with_stale_etag_is_aborted(platform: Platform) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        cat.create(code, "Yuca")
        stale = product_pb2.Product(name=f"products/{code}", display_name="Yuca brava", etag='W/"99"')
        with pytest.raises(grpc.RpcError) as caught:
            cat.UpdateProduct(
                product_service_pb2.UpdateProductRequest(
                    product=stale, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
                )
            )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason(caught.value) == "ETAG_MISMATCH"


@pytest.mark.parametrize(
    ("paths", "field", "why"),
    [
        (["code"], "update_mask.paths[0]", "FIELD_NOT_UPDATABLE"),
        (["display_name", "eligible"], "update_mask.paths[1]", "FIELD_NOT_UPDATABLE"),
    ],
)
def test_bad_field_mask_is_invalid(platform: Platform, paths: list[str], field: str, why: str) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        cat.create(code, "Ñame")
        with pytest.raises(grpc.RpcError) as caught:
            cat.UpdateProduct(
                product_service_pb2.UpdateProductRequest(
                    product=product_pb2.Product(name=f"products/{code}", display_name="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [(field, why)]


def test_deactivate_is_soft_and_reactivate_restores(platform: Platform) -> None:
    code = _code()
    with catalog(platform.settings) as cat:
        cat.create(code, "Sorgo")
        off = cat.DeactivateProduct(
            product_service_pb2.DeactivateProductRequest(name=f"products/{code}", reason="descontinuado")
        )
        still_readable = cat.GetProduct(product_service_pb2.GetProductRequest(name=f"products/{code}"))
        listed = cat.ListProducts(product_service_pb2.ListProductsRequest(code_prefix=code))
        listed_all = cat.ListProducts(product_service_pb2.ListProductsRequest(code_prefix=code, show_inactive=True))
        with pytest.raises(grpc.RpcError) as again:
            cat.DeactivateProduct(
                product_service_pb2.DeactivateProductRequest(name=f"products/{code}", reason="otra vez")
            )
        on = cat.ReactivateProduct(product_service_pb2.ReactivateProductRequest(name=f"products/{code}"))
    assert off.state == product_pb2.PRODUCT_STATE_INACTIVE
    assert still_readable.state == product_pb2.PRODUCT_STATE_INACTIVE
    assert [p.code for p in listed.products] == []
    assert [p.code for p in listed_all.products] == [code]
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert on.state == product_pb2.PRODUCT_STATE_ACTIVE
    assert on.revision == 3


def test_list_by_prefix_pages_with_tokens(platform: Platform) -> None:
    prefix = _code("PG")
    codes = [f"{prefix}-{i:02d}" for i in range(7)]
    with catalog(platform.settings) as cat:
        for code in codes:
            cat.create(code, f"Frijol {code}")
        seen: list[str] = []
        token = ""
        while True:
            page = cat.ListProducts(
                product_service_pb2.ListProductsRequest(code_prefix=prefix, page_size=3, page_token=token)
            )
            seen += [p.code for p in page.products]
            token = page.next_page_token
            if not token:
                break
    assert seen == codes


def test_page_token_from_other_filters_or_edited_is_invalid(platform: Platform) -> None:
    prefix = _code("TK")
    with catalog(platform.settings) as cat:
        for i in range(3):
            cat.create(f"{prefix}-{i}", "Lenteja")
        first = cat.ListProducts(product_service_pb2.ListProductsRequest(code_prefix=prefix, page_size=1))
        for bad in (first.next_page_token[:-3] + "abc", "not-a-token"):
            with pytest.raises(grpc.RpcError) as caught:
                cat.ListProducts(
                    product_service_pb2.ListProductsRequest(code_prefix=prefix, page_size=1, page_token=bad)
                )
            assert violations(caught.value) == [("page_token", "INVALID_PAGE_TOKEN")]
        with pytest.raises(grpc.RpcError) as reused:
            cat.ListProducts(
                product_service_pb2.ListProductsRequest(code_prefix="OTHER", page_token=first.next_page_token)
            )
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_search_by_name_similarity_category_and_eligibility(platform: Platform) -> None:
    tag = uuid.uuid4().hex[:6]
    with catalog(platform.settings) as cat:
        cat.create(_code(), f"Tilapia roja {tag}", product_pb2.CATEGORY_FISHING)
        cat.create(_code(), f"Tilapia negra {tag}", product_pb2.CATEGORY_FISHING)
        cat.create(
            _code(), f"Filete de tilapia empacado {tag}", product_pb2.CATEGORY_AGROINDUSTRIAL,
            processing_level=product_pb2.PROCESSING_LEVEL_INDUSTRIAL,
        )  # fmt: skip
        found = cat.ListProducts(product_service_pb2.ListProductsRequest(name_query=f"tilapia roja {tag}"))
        eligible = cat.ListProducts(
            product_service_pb2.ListProductsRequest(name_query=f"tilapia {tag}", eligible_only=True)
        )
        fishing = cat.ListProducts(
            product_service_pb2.ListProductsRequest(name_query=f"tilapia {tag}", category=product_pb2.CATEGORY_FISHING)
        )
    assert found.products[0].display_name == f"Tilapia roja {tag}"
    assert all(p.eligible for p in eligible.products)
    assert len([p for p in eligible.products if tag in p.display_name]) == 2  # the industrial fillet is left out
    assert {p.category for p in fishing.products} == {product_pb2.CATEGORY_FISHING}


def test_broker_cannot_change_the_catalog(platform: Platform) -> None:
    with catalog(platform.settings, role="broker", tenant="acme") as cat, pytest.raises(grpc.RpcError) as caught:
        cat.create(_code(), "Maíz")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_bad_operation_name_is_invalid_and_unknown_is_not_found(platform: Platform) -> None:
    from google.longrunning import operations_pb2

    with catalog(platform.settings) as cat:
        with pytest.raises(grpc.RpcError) as bad:
            cat.GetOperation(operations_pb2.GetOperationRequest(name="operations/x"))
        with pytest.raises(grpc.RpcError) as unknown:
            cat.GetOperation(operations_pb2.GetOperationRequest(name="productOperations/none"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
