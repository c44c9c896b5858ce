"""The vectorised CSV reader of bulk imports against the row-by-row reader:
same products, same rejects with the same line numbers, for any file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.product.columnar import PYTHON_WHITESPACE
from services.product.parsing import Chunk, LineBlocks, csv_chunks, row_chunks
from services.product.readers import SourceFile
from services.product.synth import COLUMNS

_ENUM_SPELLINGS = {
    "category": ["AGRICULTURAL", "agricultural", "CATEGORY_LIVESTOCK", "3", " fishing", "", "unknown"],
    "processing_level": ["NONE", "primary", "PROCESSING_LEVEL_INDUSTRIAL", "", "raw ", "2"],
    "vat_treatment": ["", "REDUCED", "exempt", "VAT_TREATMENT_GENERAL", "9", " EXCLUDED"],
    "withholding_class": ["", "UNPROCESSED", "coffee", "7", "NONE "],
}
_TEXT = st.text(alphabet=st.sampled_from(list('ab Zé,"\n\r\t\u00a0\u2003-_./0')), max_size=12)


def _field(column: str) -> st.SearchStrategy[str]:
    if column in _ENUM_SPELLINGS:
        return st.sampled_from(_ENUM_SPELLINGS[column]) | _TEXT
    if column == "code":
        return st.sampled_from(["P1", "A-1.b_2", " P2", "", "x" * 65, "ñ1", "P3 "]) | _TEXT
    if column == "subcategory":
        return st.sampled_from(["cereals/maize", "Coffee", "a//b", "", " fruit"]) | _TEXT
    if column == "unit_code":
        return st.sampled_from(["KGM", "kgm", "TNE ", "K", "", "KGMS"]) | _TEXT
    return _TEXT | st.just("x" * 301)


_ROW = st.tuples(*(_field(c) for c in COLUMNS)).map(list)
_LINE = _ROW.map(lambda r: ("row", r)) | st.sampled_from([("blank", []), ("short", ["P9", "n"]), ("latin1", [])])


def _write(path: Path, lines: list[tuple[str, list[str]]]) -> None:
    out = io.BytesIO()
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(COLUMNS)
    out.write(text.getvalue().encode())
    for kind, values in lines:
        text = io.StringIO()
        if kind == "blank":
            out.write(b"\n")
            continue
        if kind == "latin1":
            out.write("P8,Caf\u00e9,AGRICULTURAL,NONE,,,,,\n".encode("latin-1"))
            continue
        csv.writer(text, lineterminator="\n").writerow(values)
        out.write(text.getvalue().encode())
    path.write_bytes(out.getvalue())


def _products(chunks: list[Chunk]) -> list[list[str]]:
    rows = [row for chunk in chunks for row in csv.reader(io.StringIO(chunk.csv.decode()))]
    return [[value.lower() if value in ("True", "False") else value for value in row] for row in rows]


def _rejects(chunks: list[Chunk]) -> list[tuple[int, str, str]]:
    return [(r.line, r.field, r.reason) for chunk in chunks for r in chunk.rejects]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINE, max_size=40), size=st.integers(1, 9))
def test_arrow_chunks_equal_row_by_row_decoding(tmp_path: Path, lines: list[tuple[str, list[str]]], size: int) -> None:
    path = tmp_path / "export.csv"
    _write(path, lines)
    fast = list(csv_chunks(SourceFile(path, 0), set(), size, 0, True))
    slow = list(row_chunks(SourceFile(path, 0), set(), 1_000, 0, True))
    assert _products(fast) == _products(slow)
    assert _rejects(fast) == _rejects(slow)
    assert sum(c.rows for c in fast) == sum(c.rows for c in slow)


def test_clean_exports_take_the_vectorised_path(tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    _write(path, [("row", ["P1", "Café", "agricultural", "NONE", 'd, "q"', "coffee", "KGM", "", ""])] * 10)
    fast = list(csv_chunks(SourceFile(path, 0), set(), 4, 0, False))
    assert [c.rows for c in fast] == [4, 4, 2]
    assert _products(fast)[0] == ["P1", "Café", "1", "1", 'd, "q"', "coffee", "KGM", "0", "0", "true"]


def test_blocks_end_outside_quoted_fields() -> None:
    data = b'a,"one\ntwo",b\nc,d,e\nf,g,h\n'
    blocks = LineBlocks(io.BytesIO(b"h1,h2,h3\n" + data))
    assert blocks.header() == ["h1", "h2", "h3"]
    first = blocks.next(1)
    assert first == (2, b'a,"one\ntwo",b\n', 2), "a block may not end inside a quoted value"
    assert blocks.next(5) == (4, b"c,d,e\nf,g,h\n", 2)
    assert blocks.next(5) is None


def test_whitespace_table_matches_python() -> None:
    assert set(PYTHON_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
