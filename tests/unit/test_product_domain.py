"""Catalog rules: eligibility, row decoding of exports, validation, masks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmc.common.v1 import tax_pb2
from bmc.product.v1 import product_pb2
from services.kit.errors import InvalidArgument
from services.kit.names import resource_id
from services.product.domain import (
    InvalidProduct,
    ProductData,
    RowDecoder,
    canonical_column,
    changes_from_mask,
    is_eligible,
    product_from_row,
)


@pytest.mark.parametrize(
    ("category", "processing", "eligible"),
    [
        (product_pb2.CATEGORY_AGRICULTURAL, product_pb2.PROCESSING_LEVEL_NONE, True),
        (product_pb2.CATEGORY_LIVESTOCK, product_pb2.PROCESSING_LEVEL_PRIMARY, True),
        (product_pb2.CATEGORY_FISHING, product_pb2.PROCESSING_LEVEL_PRIMARY, True),
        (product_pb2.CATEGORY_AGRICULTURAL, product_pb2.PROCESSING_LEVEL_INDUSTRIAL, False),
        (product_pb2.CATEGORY_AGROINDUSTRIAL, product_pb2.PROCESSING_LEVEL_NONE, False),
        (product_pb2.CATEGORY_INPUTS, product_pb2.PROCESSING_LEVEL_NONE, False),
        (product_pb2.CATEGORY_FORESTRY, product_pb2.PROCESSING_LEVEL_NONE, False),
    ],
)
def test_eligibility_follows_sector_and_processing(category: int, processing: int, eligible: bool) -> None:
    assert is_eligible(category, processing) is eligible


def test_rows_accept_the_spellings_exports_use() -> None:
    row = {
        "code": " CAFE-01 ",
        "display_name": "Café pergamino",
        "category": "agricultural",
        "processing_level": "PROCESSING_LEVEL_PRIMARY",
        "unit_code": "kgm",
        "subcategory": "Coffee",
        "vat_treatment": "2",
        "withholding_class": "COFFEE",
    }
    data = product_from_row(row)
    assert data.code == "CAFE-01"
    assert data.category == product_pb2.CATEGORY_AGRICULTURAL
    assert data.processing_level == product_pb2.PROCESSING_LEVEL_PRIMARY
    assert (data.unit_code, data.subcategory) == ("KGM", "coffee")
    assert data.vat_treatment == tax_pb2.VAT_TREATMENT_REDUCED
    assert data.withholding_class == tax_pb2.WITHHOLDING_CLASS_COFFEE
    assert data.eligible


def test_csv_columns_are_decoded_by_position_with_aliases() -> None:
    columns = [canonical_column(c) for c in ("SKU", "Nombre", "Categoria", "processing", "extra")]
    assert columns == ["code", "display_name", "category", "processing_level", "extra"]
    decoder = RowDecoder(["code", "display_name", "category", "processing_level", "extra"])
    data = decoder.decode(["P1", "Papa", "AGRICULTURAL", "NONE", "ignored"])
    assert data == ProductData("P1", "Papa", product_pb2.CATEGORY_AGRICULTURAL, product_pb2.PROCESSING_LEVEL_NONE)


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"code": "", "display_name": "x"}, "code", "MISSING_CODE"),
        ({"display_name": "x"}, "code", "MISSING_CODE"),
        ({"code": "bad code!", "display_name": "x", "category": "1", "processing_level": "1"}, "code", "INVALID_CODE"),
        (
            {"code": "A", "display_name": "x", "category": "MINERAL", "processing_level": "1"},
            "category",
            "INVALID_CATEGORY",
        ),
        ({"code": "A", "display_name": "x", "processing_level": "1"}, "category", "MISSING_CATEGORY"),
        ({"code": "A", "display_name": " ", "category": "1", "processing_level": "1"}, "display_name", "MISSING_NAME"),
        (
            {"code": "A", "display_name": "x", "category": "1", "processing_level": "9"},
            "processing_level",
            "INVALID_PROCESSING_LEVEL",
        ),
        (
            {"code": "A", "display_name": "x", "category": "1", "processing_level": "1", "unit_code": "kilos"},
            "unit_code",
            "INVALID_UNIT_CODE",
        ),
    ],
)
def test_bad_rows_name_the_field_and_reason(row: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(InvalidProduct) as caught:
        product_from_row(row)
    assert (caught.value.field, caught.value.reason) == (field, reason)


@given(st.dictionaries(st.sampled_from(["code", "display_name", "category", "processing_level", "unit_code", "x"]),
                       st.one_of(st.text(max_size=20), st.integers(), st.none())))  # fmt: skip
@settings(deadline=None)
def test_any_row_is_either_a_valid_product_or_an_invalid_product_error(row: dict[str, object]) -> None:
    """Whatever an export holds, decoding never fails with anything but InvalidProduct."""
    try:
        data = product_from_row(row)
    except InvalidProduct as exc:
        reason = exc.reason
        data = None
    if data is None:
        assert reason
    else:
        assert data.validated() == data


def test_update_mask_selects_fields_and_refuses_others() -> None:
    product = product_pb2.Product(display_name="Nuevo", description="d", category=product_pb2.CATEGORY_FISHING)
    assert changes_from_mask(["display_name"], product) == {"display_name": "Nuevo"}
    assert set(changes_from_mask(["*"], product)) >= {"display_name", "description", "category"}
    with pytest.raises(InvalidProduct) as caught:
        changes_from_mask(["display_name", "eligible"], product)
    assert caught.value.field == "update_mask.paths[1]"
    with pytest.raises(InvalidProduct):
        changes_from_mask([], product)


def test_resource_names_are_parsed_once_for_every_service() -> None:
    assert resource_id("products/MAIZ-1", "products") == "MAIZ-1"
    assert resource_id("settlements/2026-11~all", "settlements") == "2026-11~all"
    for bad in ("product/MAIZ", "products/", "products/a b", "MAIZ", "products/a/b", "products/../x", "products/-x"):
        with pytest.raises(InvalidArgument) as caught:
            resource_id(bad, "products", "names[3]")
        assert [(v.field, v.reason) for v in caught.value.violations] == [("names[3]", "INVALID_NAME")]
