"""The catalog's row rules applied to a whole column batch at once (Arrow).

Decoding exports row by row in Python costs more than PostgreSQL's `COPY` of
the same rows, so a bulk import checks each chunk with Arrow's vectorised
kernels instead. The check is deliberately conservative: a row it accepts is
one `RowDecoder` accepts and decodes to the same values (a property test holds
the two together); anything unusual (surrounding whitespace, an enum spelled
with spaces, a missing value) is left to `RowDecoder`, which gives the precise
reason or accepts it after all. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from services.product.domain import (
    CATEGORIES,
    DATA_FIELDS,
    ELIGIBLE_CATEGORIES,
    ELIGIBLE_PROCESSING,
    PROCESSING_LEVELS,
    VAT_TREATMENTS,
    WITHHOLDING_CLASSES,
)

# Every character `str.isspace()` (and so `str.strip()`) treats as whitespace.
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in PYTHON_WHITESPACE) + "]"
_EDGE_SPACE = f"^{_SPACE}|{_SPACE}$"
# ASCII-only spellings whose strip/lower/upper are the identity or ASCII case
# mapping, so the vectorised result equals RowDecoder's.
_CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SUBCATEGORY = r"^([A-Za-z0-9_]+(/[A-Za-z0-9_]+)*)?$"
_UNIT_CODE = r"^([A-Za-z0-9]{2,3})?$"
MAX_CODE, MAX_NAME, MAX_DESCRIPTION = 64, 300, 2000

OUTPUT_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("display_name", pa.string()),
        ("category", pa.int16()),
        ("processing_level", pa.int16()),
        ("description", pa.string()),
        ("subcategory", pa.string()),
        ("unit_code", pa.string()),
        ("vat_treatment", pa.int16()),
        ("withholding_class", pa.int16()),
        ("eligible", pa.bool_()),
    ]
)
assert tuple(OUTPUT_SCHEMA.names[:-1]) == DATA_FIELDS


class _Enum:
    def __init__(self, table: Mapping[str, int], required: bool) -> None:
        spellings = dict(table) if required else {**table, "": 0}
        self.keys = pa.array(list(spellings), pa.string())
        self.numbers = pa.array(list(spellings.values()), pa.int16())

    def decode(self, values: pa.Array) -> pa.Array:
        """The enum number of each exact spelling; null where RowDecoder must look."""
        return pc.take(self.numbers, pc.index_in(values, value_set=self.keys))


_ENUMS = {
    "category": _Enum(CATEGORIES, required=True),
    "processing_level": _Enum(PROCESSING_LEVELS, required=True),
    "vat_treatment": _Enum(VAT_TREATMENTS, required=False),
    "withholding_class": _Enum(WITHHOLDING_CLASSES, required=False),
}
_ELIGIBLE_CATEGORIES = pa.array(sorted(ELIGIBLE_CATEGORIES), pa.int16())
_ELIGIBLE_PROCESSING = pa.array(sorted(ELIGIBLE_PROCESSING), pa.int16())


def _all(masks: Sequence[pa.Array]) -> pa.Array:
    result = masks[0]
    for mask in masks[1:]:
        result = pc.and_kleene(result, mask)
    return pc.fill_null(result, False)


def decode_batch(batch: pa.Table, columns: Sequence[str]) -> tuple[pa.Table, pa.Array]:
    """Products of the rows surely valid, typed as `OUTPUT_SCHEMA`, and a
    boolean mask of the rows left to `RowDecoder`.

    `batch` holds the file's columns as strings, in file order; `columns`
    are their canonical names (the last of a repeated name wins, as in
    `RowDecoder`)."""
    rows = batch.num_rows
    position = {name: i for i, name in enumerate(columns)}

    def text(name: str) -> pa.Array:
        at = position.get(name, -1)
        return batch.column(at).combine_chunks() if at >= 0 else pa.array([""] * rows, pa.string())

    if "display_name" not in position or "category" not in position or "processing_level" not in position:
        return OUTPUT_SCHEMA.empty_table(), pa.array([True] * rows)
    code, name, description = text("code"), text("display_name"), text("description")
    subcategory, unit = text("subcategory"), text("unit_code")
    enums = {field: codec.decode(text(field)) for field, codec in _ENUMS.items()}
    name_length = pc.utf8_length(name)
    good = _all(
        [
            pc.less_equal(pc.binary_length(code), MAX_CODE),
            pc.match_substring_regex(code, _CODE),
            pc.greater(name_length, 0),
            pc.less_equal(name_length, MAX_NAME),
            pc.invert(pc.match_substring_regex(name, _EDGE_SPACE)),
            pc.less_equal(pc.utf8_length(description), MAX_DESCRIPTION),
            pc.match_substring_regex(subcategory, _SUBCATEGORY),
            pc.match_substring_regex(unit, _UNIT_CODE),
            *(pc.is_valid(number) for number in enums.values()),
        ]
    )
    category, processing = enums["category"], enums["processing_level"]
    eligible = pc.and_(
        pc.is_in(category, value_set=_ELIGIBLE_CATEGORIES), pc.is_in(processing, value_set=_ELIGIBLE_PROCESSING)
    )
    decoded = pa.table(
        [
            code,
            name,
            category,
            processing,
            description,
            pc.ascii_lower(subcategory),
            pc.ascii_upper(unit),
            enums["vat_treatment"],
            enums["withholding_class"],
            eligible,
        ],
        schema=OUTPUT_SCHEMA,
    )
    return decoded.filter(good), pc.invert(good)
