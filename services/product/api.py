"""The `ProductService` servicer: maps protos to the catalog and back."""

from __future__ import annotations

from typing import Any

from google.longrunning import operations_pb2

from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.kit.auth import require_principal
from services.kit.errors import FieldViolation, InvalidArgument, NotFound
from services.kit.idempotency import RequestKeys, keyed
from services.kit.names import resource_id
from services.kit.operations import OperationRpcs, OperationStore
from services.kit.paging import INT, SCORE, TEXT, list_page
from services.product.cache import ProductCache
from services.product.domain import CODE, InvalidProduct, changes_from_mask, data_from_proto, name_of
from services.product.imports import ProductImporter
from services.product.store import CatalogStore, ListQuery, StoredProduct

OPERATIONS = "productOperations"


def to_proto(stored: StoredProduct) -> product_pb2.Product:
    data = stored.data
    product = product_pb2.Product(
        name=name_of(data.code),
        code=data.code,
        display_name=data.display_name,
        description=data.description,
        category=data.category,  # type: ignore[arg-type]
        subcategory=data.subcategory,
        processing_level=data.processing_level,  # type: ignore[arg-type]
        unit_code=data.unit_code,
        vat_treatment=data.vat_treatment,  # type: ignore[arg-type]
        withholding_class=data.withholding_class,  # type: ignore[arg-type]
        eligible=stored.eligible,
        state=product_pb2.PRODUCT_STATE_ACTIVE if stored.active else product_pb2.PRODUCT_STATE_INACTIVE,
        revision=stored.revision,
        etag=stored.etag,
    )
    product.create_time.FromDatetime(stored.create_time)
    product.update_time.FromDatetime(stored.update_time)
    return product


def invalid(exc: InvalidProduct, prefix: str = "") -> InvalidArgument:
    path = f"{prefix}.{exc.field}" if prefix and exc.field else exc.field
    return InvalidArgument(exc.message, reason=exc.reason, violations=[FieldViolation(path, exc.message, exc.reason)])


def _code(name: str, field: str = "name") -> str:
    code = resource_id(name, "products", field)
    if not CODE.match(code):
        raise invalid(InvalidProduct(field, "INVALID_NAME", f"{name!r} is not a product name (products/{{code}})"))
    return code


class ProductApi(OperationRpcs, product_service_pb2_grpc.ProductServiceServicer):
    """RPCs of `bmc.product.v1.ProductService`."""

    def __init__(
        self,
        store: CatalogStore,
        cache: ProductCache,
        importer: ProductImporter,
        operations: OperationStore,
        keys: RequestKeys,
    ) -> None:
        self._store, self._cache, self._importer = store, cache, importer
        self.operations, self.request_keys = operations, keys

    async def lookup(self, codes: list[str]) -> tuple[dict[str, product_pb2.Product], list[str]]:
        """Read-through: Redis first, PostgreSQL for the rest, then fill Redis."""
        unique = list(dict.fromkeys(codes))
        found, missing = await self._cache.lookup(unique)
        wanted = [c for c in unique if c not in found and c not in missing]
        if wanted:
            loaded = {code: to_proto(p) for code, p in (await self._store.get_many(wanted)).items()}
            absent = [c for c in wanted if c not in loaded]
            await self._cache.store(list(loaded.values()), absent)
            found.update(loaded)
            missing.update(absent)
        return found, [c for c in codes if c in missing]

    async def GetProduct(self, request: product_service_pb2.GetProductRequest, context: Any) -> product_pb2.Product:
        code = _code(request.name)
        found, _ = await self.lookup([code])
        if code not in found:
            raise NotFound(
                f"product {request.name!r} not found", reason="PRODUCT_NOT_FOUND", metadata={"name": request.name}
            )
        return found[code]

    async def BatchGetProducts(
        self, request: product_service_pb2.BatchGetProductsRequest, context: Any
    ) -> product_service_pb2.BatchGetProductsResponse:
        codes = [_code(name, f"names[{i}]") for i, name in enumerate(request.names)]
        found, missing = await self.lookup(codes)
        return product_service_pb2.BatchGetProductsResponse(
            products=[found[c] for c in codes if c in found], missing=[name_of(c) for c in missing]
        )

    async def ListProducts(
        self, request: product_service_pb2.ListProductsRequest, context: Any
    ) -> product_service_pb2.ListProductsResponse:
        query = ListQuery(
            code_prefix=request.code_prefix,
            name_query=request.name_query.strip(),
            category=request.category,
            eligible_only=request.eligible_only,
            show_inactive=request.show_inactive,
        )
        keys = (SCORE, TEXT) if query.name_query else (TEXT,)
        products, token = await list_page(request, keys, 50, self._store.search, query)
        return product_service_pb2.ListProductsResponse(products=[to_proto(p) for p in products], next_page_token=token)

    @keyed(product_pb2.Product)
    async def CreateProduct(
        self, request: product_service_pb2.CreateProductRequest, context: Any
    ) -> product_pb2.Product:
        try:
            data = data_from_proto(request.product_id, request.product)
        except InvalidProduct as exc:
            field = "product_id" if exc.field == "code" else f"product.{exc.field}"
            raise invalid(InvalidProduct(field, exc.reason, exc.message)) from exc
        stored = await self._store.create(data, require_principal().subject)
        await self._cache.invalidate([data.code])
        return to_proto(stored)

    async def UpdateProduct(
        self, request: product_service_pb2.UpdateProductRequest, context: Any
    ) -> product_pb2.Product:
        code = _code(request.product.name, "product.name")
        try:
            changes = changes_from_mask(list(request.update_mask.paths), request.product)
        except InvalidProduct as exc:
            raise invalid(exc) from exc
        current = await self._store.get(code)
        if current is None:
            raise NotFound(f"product {request.product.name!r} not found", reason="PRODUCT_NOT_FOUND")
        try:
            data = current.data.with_changes(changes)
        except InvalidProduct as exc:
            raise invalid(exc, "product") from exc
        stored = await self._store.update(data, request.product.etag, require_principal().subject)
        await self._cache.invalidate([code])
        return to_proto(stored)

    async def DeactivateProduct(
        self, request: product_service_pb2.DeactivateProductRequest, context: Any
    ) -> product_pb2.Product:
        code = _code(request.name)
        stored = await self._store.set_active(code, False, request.etag, require_principal().subject, request.reason)
        await self._cache.invalidate([code])
        return to_proto(stored)

    async def ReactivateProduct(
        self, request: product_service_pb2.ReactivateProductRequest, context: Any
    ) -> product_pb2.Product:
        code = _code(request.name)
        stored = await self._store.set_active(code, True, request.etag, require_principal().subject)
        await self._cache.invalidate([code])
        return to_proto(stored)

    async def ListProductRevisions(
        self, request: product_service_pb2.ListProductRevisionsRequest, context: Any
    ) -> product_service_pb2.ListProductRevisionsResponse:
        code = _code(request.name)
        versions, token = await list_page(request, (INT,), 20, self._store.history, code)
        if not versions and not request.page_token:
            raise NotFound(f"product {request.name!r} not found", reason="PRODUCT_NOT_FOUND")
        return product_service_pb2.ListProductRevisionsResponse(
            revisions=[
                product_pb2.ProductRevision(product=to_proto(v), actor=v.actor, change=v.change) for v in versions
            ],
            next_page_token=token,
        )

    async def ImportProducts(
        self, request: product_service_pb2.ImportProductsRequest, context: Any
    ) -> operations_pb2.Operation:
        return await self._importer.start(request, require_principal().subject)
