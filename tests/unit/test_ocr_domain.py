"""The OCR service's pure rules: Colombian amounts, dates and times, the DIAN
QR payload, labelled fields with their place on the page, line items and
the cross-checks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.dian.nit import check_digit
from services.ocr.domain import (
    Field,
    PageText,
    Reading,
    Source,
    cross_check,
    line_items,
    parse_amount,
    parse_date,
    parse_dian_qr,
    parse_time,
    text_fields,
    to_confirm,
    turned_back,
    union,
    verified,
)


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("$ 1.190.000,00", "1190000.00"),
        ("1,190,000.00", "1190000.00"),
        ("COP 1.190.000", "1190000.00"),
        ("1190000", "1190000.00"),
        ("$ 19.813,50", "19813.50"),
        ("0,00", "0.00"),
    ],
)
def test_colombian_and_english_amounts(text: str, amount: str) -> None:
    assert parse_amount(text) == Decimal(amount)


def test_dates_and_times_in_the_forms_invoices_print() -> None:
    assert parse_date("2026-11-21") == parse_date("21/11/2026") == parse_date("21 de noviembre de 2026")
    assert parse_date("21 de noviembre de 2026") == dt.date(2026, 11, 21)
    assert parse_date("31/02/2026") is None
    assert parse_date("21 de brumario de 2026") is None
    assert parse_time("Hora: 10:15:00") == "10:15:00-05:00"
    assert parse_time("3:05 p. m.") == "15:05:00-05:00"
    assert parse_time("12:30 a.m.") == "00:30:00-05:00"
    assert parse_time("25:00") is None
    assert parse_time("sin hora") is None


def test_the_dian_qr_payload_in_both_forms() -> None:
    cufe = "a" * 96
    current = f"NumFac: SETP990000001\nFecFac: 2026-11-21\nHorFac: 10:15:00-05:00\nValTolFac: 1190000.00\nCUFE: {cufe}"
    older = f"NroFactura=SETP990000001\nValorTotalFactura=1190000.00\nCUFE={cufe}"
    assert parse_dian_qr(current) == {
        "number": "SETP990000001",
        "issue_date": "2026-11-21",
        "issue_time": "10:15:00-05:00",
        "total": "1190000.00",
        "cufe": cufe,
    }
    assert parse_dian_qr(older) == {"number": "SETP990000001", "total": "1190000.00", "cufe": cufe}
    assert parse_dian_qr("https://example.com/pay?id=1") is None


PAGE = (
    "Agropecuaria El Llano S.A.S. — NIT 900.508.908-9\n"
    "Factura electrónica de venta No. FE-12345\n"
    "Fecha de emisión: 21/11/2026   Hora: 10:15:00\n"
    "Cliente: Molinos del Centro S.A. NIT 860.034.313-7\n"
    "Maíz amarillo 10 TNE 1.250.000,00 12.500.000,00\n"
    "Subtotal: $ 12.500.000,00\n"
    "IVA 5%: $ 625.000,00\n"
    "Total a pagar: $ 13.125.000,00\n"
)


def _words(text: str) -> PageText:
    """Each word on its own row band: row r at top r/10, word by its column."""
    spans = []
    for row, line in enumerate(text.split("\n")):
        start = sum(len(r) + 1 for r in text.split("\n")[:row])
        column = 0
        for word in line.split(" "):
            if word:
                box = (column / 100, row / 10, len(word) / 100, 0.05)
                spans.append((start + column, start + column + len(word), box))
            column += len(word) + 1
    return PageText(text, spans)


def test_labelled_fields_are_read_with_where_they_are() -> None:
    fields = {f.name: f for f in text_fields(_words(PAGE), Source.TEXT_LAYER, 1)}
    values = {name: f.value for name, f in fields.items()}
    assert values == {
        "number": "FE-12345",
        "issue_date": "2026-11-21",
        "issue_time": "10:15:00-05:00",
        "subtotal": "12500000.00",
        "vat": "625000.00",
        "total": "13125000.00",
        "seller_nit": "900508908",
        "seller_nit_dv": "9",
        "buyer_id": "860034313",
        "buyer_id_dv": "7",
        "buyer_name": "Molinos del Centro S.A.",
        "seller_name": "Agropecuaria El Llano S.A.S.",
    }
    total_row = PAGE.split("\n").index("Total a pagar: $ 13.125.000,00")
    column = "Total a pagar: $ ".__len__()
    assert fields["total"].box == (column / 100, total_row / 10, len("13.125.000,00") / 100, 0.05)
    assert fields["number"].box is not None
    assert fields["number"].box[1] == 0.1
    assert all(f.page == 1 for f in fields.values())
    plain = {f.name: f.box for f in text_fields(PAGE, Source.OCR)}
    assert set(plain.values()) == {None}  # no geometry, no boxes


def test_the_time_of_issue_is_read_beside_its_date_or_under_its_own_label() -> None:
    for text in ("Fecha y hora de expedición: 2026-11-21 15:13:00", "Fecha de emisión: 21/11/2026  Hora: 3:13 p. m."):
        found = {f.name: f.value for f in text_fields(text, Source.OCR)}
        assert (found["issue_date"], found["issue_time"]) == ("2026-11-21", "15:13:00-05:00")


def test_boxes_join_and_turn_back() -> None:
    assert union([(0.1, 0.1, 0.1, 0.1), (0.3, 0.15, 0.1, 0.1)]) == (0.1, 0.1, 0.3, 0.15)
    assert union([]) is None
    box = (0.1, 0.2, 0.3, 0.05)
    for turn in (90, 180, 270):
        there = turned_back(box, turn)
        assert turned_back(there, (360 - turn) % 360) == pytest.approx(box)
    assert turned_back(box, 180) == pytest.approx((0.6, 0.75, 0.3, 0.05))


def test_line_items_keep_only_rows_whose_arithmetic_holds() -> None:
    (item,) = line_items(PAGE + "Flete 1 2.000,00 9.999,00\n", Source.TEXT_LAYER)
    assert (item.description, item.quantity, item.unit, item.total) == (
        "Maíz amarillo",
        Decimal("10"),
        "TNE",
        Decimal("12500000.00"),
    )


def test_cross_checks_raise_agreeing_values_and_warn_about_the_rest() -> None:
    reading = Reading()
    for f in text_fields(PAGE.replace("860.034.313-7", "860.034.313-2"), Source.OCR, 1):
        reading.offer(f)
    reading.lines = line_items(PAGE, Source.OCR)
    checked = cross_check(reading)
    assert [w.code for w in checked.warnings] == ["NIT_CHECK_DIGIT"]
    assert checked.fields["total"].confidence > reading.fields["total"].confidence  # 12.5M + 625k = 13.125M
    assert checked.fields["buyer_id"].confidence < reading.fields["buyer_id"].confidence


# ------------------------------------------------------- confirmation gate


def _reading(source: Source, **values: str) -> Reading:
    reading = Reading()
    for name, value in values.items():
        reading.offer(Field(name, value, source, 0.8))
    return reading


NIT = "900123456"


def test_ocr_key_fields_nothing_checks_wait_for_a_person() -> None:
    reading = _reading(
        Source.OCR, number="FE1001", cufe="ab" * 48, seller_nit=NIT, buyer_id="800197268", total="119.00"
    )
    assert to_confirm(reading) == ["number", "cufe", "seller_nit", "buyer_id", "total"]


def test_a_printed_check_digit_and_totals_that_add_up_confirm_their_fields() -> None:
    reading = _reading(
        Source.OCR,
        number="FE1001",
        seller_nit=NIT,
        seller_nit_dv=str(check_digit(NIT)),
        buyer_id="800197268",
        buyer_id_dv=str((check_digit("800197268") + 1) % 10),  # misread: confirms nothing
        subtotal="100.00",
        vat="19.00",
        total="119.00",
    )
    assert verified(reading) == {"seller_nit", "total"}
    assert to_confirm(reading) == ["number", "buyer_id"]


def test_a_check_digit_the_reader_derived_confirms_nothing() -> None:
    reading = _reading(Source.OCR, seller_nit=NIT)
    reading.offer(Field("seller_nit_dv", str(check_digit(NIT)), Source.DERIVED, 0.9))
    assert to_confirm(reading) == ["seller_nit"]


def test_totals_that_do_not_add_up_leave_the_total_to_confirm() -> None:
    reading = _reading(Source.OCR, subtotal="100.00", vat="19.00", total="191.00")
    assert to_confirm(reading) == ["total"]


@pytest.mark.parametrize("source", [Source.QR, Source.TEXT_LAYER])
def test_values_from_the_qr_code_or_a_text_layer_need_no_confirmation(source: Source) -> None:
    reading = _reading(source, number="FE1001", cufe="ab" * 48, seller_nit=NIT, buyer_id="800197268", total="1")
    assert to_confirm(reading) == []
