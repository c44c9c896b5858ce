"""Catalog rules, free of I/O: what a valid product is, when it is eligible
for registration at the exchange, and how an imported row becomes a product."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from bmc.common.v1 import tax_pb2
from bmc.product.v1 import product_pb2

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUBCATEGORY = re.compile(r"^([a-z0-9_]+(/[a-z0-9_]+)*)?$")
UNIT_CODE = re.compile(r"^([A-Z0-9]{2,3})?$")
NAME_PREFIX = "products/"

# Agricultural, livestock and fishing goods without processing or with at
# most primary transformation (DUR 1625/2016 art. 1.2.4.6.10).
ELIGIBLE_CATEGORIES = frozenset(
    {product_pb2.CATEGORY_AGRICULTURAL, product_pb2.CATEGORY_LIVESTOCK, product_pb2.CATEGORY_FISHING}
)
ELIGIBLE_PROCESSING = frozenset({product_pb2.PROCESSING_LEVEL_NONE, product_pb2.PROCESSING_LEVEL_PRIMARY})

MUTABLE_FIELDS = (
    "display_name",
    "description",
    "category",
    "subcategory",
    "processing_level",
    "unit_code",
    "vat_treatment",
    "withholding_class",
)


def _enum_lookup(enum: Any, prefix: str) -> dict[str, int]:
    """Accepts `CATEGORY_LIVESTOCK`, `livestock` and the number, as exports write them."""
    table: dict[str, int] = {}
    for name, number in enum.items():
        if number == 0:
            continue
        short = name.removeprefix(prefix)
        for key in (name, short, short.lower(), str(number)):
            table[key] = number
    return table


CATEGORIES = _enum_lookup(product_pb2.Category, "CATEGORY_")
PROCESSING_LEVELS = _enum_lookup(product_pb2.ProcessingLevel, "PROCESSING_LEVEL_")
VAT_TREATMENTS = _enum_lookup(tax_pb2.VatTreatment, "VAT_TREATMENT_")
WITHHOLDING_CLASSES = _enum_lookup(tax_pb2.WithholdingClass, "WITHHOLDING_CLASS_")


class InvalidProduct(ValueError):
    """A product that breaks a catalog rule; `field` names the offending field."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


class ProductData(NamedTuple):
    """The mutable content of a product (what imports and updates set).

    A named tuple rather than a dataclass: imports build millions of them."""

    code: str
    display_name: str
    category: int
    processing_level: int
    description: str = ""
    subcategory: str = ""
    unit_code: str = ""
    vat_treatment: int = 0
    withholding_class: int = 0

    @property
    def eligible(self) -> bool:
        return is_eligible(self.category, self.processing_level)

    def validated(self) -> ProductData:
        """Self, or InvalidProduct naming the first broken rule."""
        if not CODE.match(self.code):
            raise InvalidProduct("code", "INVALID_CODE", f"code {self.code!r} must be 1-64 letters, digits, . _ -")
        if not self.display_name or self.display_name.isspace():
            raise InvalidProduct("display_name", "MISSING_NAME", "display_name is required")
        if len(self.display_name) > 300:
            raise InvalidProduct("display_name", "NAME_TOO_LONG", "display_name is longer than 300 characters")
        if len(self.description) > 2000:
            raise InvalidProduct("description", "DESCRIPTION_TOO_LONG", "description is longer than 2000 characters")
        if self.category not in _CATEGORY_NUMBERS:
            raise InvalidProduct("category", "INVALID_CATEGORY", "category is required and must be a known one")
        if self.processing_level not in _PROCESSING_NUMBERS:
            raise InvalidProduct("processing_level", "INVALID_PROCESSING_LEVEL", "processing_level is required")
        if self.subcategory and not SUBCATEGORY.match(self.subcategory):
            raise InvalidProduct("subcategory", "INVALID_SUBCATEGORY", "subcategory must look like `cereals/maize`")
        if self.unit_code and not UNIT_CODE.match(self.unit_code):
            raise InvalidProduct("unit_code", "INVALID_UNIT_CODE", "unit_code must be a UN/ECE Rec. 20 code (KGM)")
        if self.vat_treatment not in _VAT_NUMBERS:
            raise InvalidProduct("vat_treatment", "INVALID_VAT_TREATMENT", "unknown vat_treatment")
        if self.withholding_class not in _WITHHOLDING_NUMBERS:
            raise InvalidProduct("withholding_class", "INVALID_WITHHOLDING_CLASS", "unknown withholding_class")
        return self

    def with_changes(self, changes: Mapping[str, Any]) -> ProductData:
        return self._replace(**changes).validated()


_CATEGORY_NUMBERS = frozenset(n for n in product_pb2.Category.values() if n)
_PROCESSING_NUMBERS = frozenset(n for n in product_pb2.ProcessingLevel.values() if n)
_VAT_NUMBERS = frozenset(tax_pb2.VatTreatment.values())
_WITHHOLDING_NUMBERS = frozenset(tax_pb2.WithholdingClass.values())


def is_eligible(category: int, processing_level: int) -> bool:
    return category in ELIGIBLE_CATEGORIES and processing_level in ELIGIBLE_PROCESSING


def name_of(code: str) -> str:
    return NAME_PREFIX + code


def data_from_proto(code: str, product: product_pb2.Product) -> ProductData:
    return ProductData(
        code=code,
        display_name=product.display_name.strip(),
        description=product.description,
        category=product.category,
        subcategory=product.subcategory,
        processing_level=product.processing_level,
        unit_code=product.unit_code,
        vat_treatment=product.vat_treatment,
        withholding_class=product.withholding_class,
    ).validated()


def changes_from_mask(paths: list[str], product: product_pb2.Product) -> dict[str, Any]:
    """The field values an update mask selects; `*` selects every mutable field."""
    if not paths:
        raise InvalidProduct("update_mask", "EMPTY_MASK", "update_mask must name at least one field")
    selected: list[str] = []
    for index, path in enumerate(paths):
        if path == "*":
            selected.extend(MUTABLE_FIELDS)
        elif path in MUTABLE_FIELDS:
            selected.append(path)
        else:
            raise InvalidProduct(
                f"update_mask.paths[{index}]",
                "FIELD_NOT_UPDATABLE",
                f"{path!r} cannot be updated; updatable: {', '.join(MUTABLE_FIELDS)}",
            )
    return {name: getattr(product, name) for name in dict.fromkeys(selected)}


# ---------------------------------------------------------------- imports

# Column names accepted in exports, beyond the canonical ones.
ALIASES = {
    "product_code": "code",
    "sku": "code",
    "id": "code",
    "name": "display_name",
    "nombre": "display_name",
    "descripcion": "description",
    "categoria": "category",
    "processing": "processing_level",
    "unit": "unit_code",
    "unidad": "unit_code",
    "vat": "vat_treatment",
    "withholding": "withholding_class",
}
DATA_FIELDS = ProductData._fields


def canonical_column(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


class RowDecoder:
    """Turns the values of one exported row into a product, given the
    file's column names (canonical). Built once per file or key layout:
    imports decode millions of rows, so lookups are by position."""

    def __init__(self, columns: Sequence[str]) -> None:
        position = {name: i for i, name in enumerate(columns)}
        self._at = tuple(position.get(name, -1) for name in ProductData._fields)
        if self._at[0] < 0:
            raise InvalidProduct("code", "MISSING_CODE_COLUMN", "the file has no `code` column")

    def decode(self, values: Sequence[Any]) -> ProductData:
        code_at, name_at, category_at, processing_at, description_at, sub_at, unit_at, vat_at, wh_at = self._at
        code = _text(values[code_at]).strip()
        if not code:
            raise InvalidProduct("code", "MISSING_CODE", "code is missing")
        return ProductData(
            code,
            _text(values[name_at]).strip() if name_at >= 0 else "",
            _enum(values[category_at] if category_at >= 0 else None, CATEGORIES, "category", True),
            _enum(values[processing_at] if processing_at >= 0 else None, PROCESSING_LEVELS, "processing_level", True),
            _text(values[description_at]) if description_at >= 0 else "",
            _text(values[sub_at]).strip().lower() if sub_at >= 0 else "",
            _text(values[unit_at]).strip().upper() if unit_at >= 0 else "",
            _enum(values[vat_at] if vat_at >= 0 else None, VAT_TREATMENTS, "vat_treatment", False),
            _enum(values[wh_at] if wh_at >= 0 else None, WITHHOLDING_CLASSES, "withholding_class", False),
        ).validated()


_decoders: dict[tuple[str, ...], RowDecoder] = {}


def _enum(value: Any, table: Mapping[str, int], field: str, required: bool) -> int:
    number = table.get(value) if isinstance(value, str) else None
    if number is not None:
        return number
    if value is None or value == "":
        if required:
            raise InvalidProduct(field, f"MISSING_{field.upper()}", f"{field} is missing")
        return 0
    number = table.get(str(value).strip())
    if number is None:
        raise InvalidProduct(field, f"INVALID_{field.upper()}", f"{field} {value!r} is not a known value")
    return number


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def product_from_row(row: Mapping[str, Any]) -> ProductData:
    """One exported row (JSON or Parquet, canonical keys) as a product."""
    keys = tuple(row)
    decoder = _decoders.get(keys)
    if decoder is None:
        if "code" not in row:
            raise InvalidProduct("code", "MISSING_CODE", "code is missing")
        decoder = _decoders.setdefault(keys, RowDecoder(keys))
    return decoder.decode(tuple(row.values()))
