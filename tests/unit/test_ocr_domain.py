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
    to_confirm,
    turned_back,
    union,
    verified,
)
from services.ocr.layout import read_page


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


def _read(content: str | PageText, source: Source = Source.TEXT_LAYER) -> dict[str, Field]:
    page = content if isinstance(content, PageText) else _words(content)
    return {f.name: f for f in read_page(page, source, 1).fields}


def test_labelled_fields_are_read_with_where_they_are() -> None:
    fields = _read(PAGE)
    values = {name: f.value for name, f in fields.items()}
    assert values == {
        "number": "FE12345",  # DIAN's ID: the prefix and the consecutive, with nothing between
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
    column = "Total a pagar: ".__len__()
    assert fields["total"].box == (column / 100, total_row / 10, len("$ 13.125.000,00") / 100, 0.05)
    assert fields["number"].box is not None
    assert fields["number"].box[1] == 0.1
    assert all(f.page == 1 for f in fields.values())


def test_the_time_of_issue_is_read_beside_its_date_or_under_its_own_label() -> None:
    for text in ("Fecha y hora de expedición: 2026-11-21 15:13:00", "Fecha de emisión: 21/11/2026  Hora: 3:13 p. m."):
        found = {name: f.value for name, f in _read(text).items()}
        assert (found["issue_date"], found["issue_time"]) == ("2026-11-21", "15:13:00-05:00")


def _laid_out(*cells: tuple[float, float, str]) -> PageText:
    """Words at given places: (left, top, text) cells, a character 0.006 wide and 0.012 high."""
    text, spans = "", []
    for left, top, cell in cells:
        for word in cell.split(" "):
            if text:
                text += " "
            spans.append((len(text), len(text) + len(word), (left, top, len(word) * 0.006, 0.012)))
            text += word
            left += (len(word) + 1) * 0.006
    return PageText(text, spans)


def test_values_are_found_beside_or_beneath_their_label_in_any_order() -> None:
    grid = _laid_out(
        (0.05, 0.10, "Fecha de expedición"), (0.30, 0.10, "Fecha de vencimiento"), (0.55, 0.10, "Orden de compra"),
        (0.05, 0.125, "09-01-2026"), (0.30, 0.125, "10-03-2026"), (0.55, 0.125, "OC-4582065"),
        (0.05, 0.20, "Subtotal"), (0.30, 0.20, "Total IVA"), (0.55, 0.20, "Total documento"),
        (0.05, 0.225, "$ 100.000,00"), (0.30, 0.225, "$ 19.000,00"), (0.55, 0.225, "$ 119.000,00"),
    )  # fmt: skip
    found = {name: f.value for name, f in _read(grid).items()}
    assert found["issue_date"] == "2026-01-09", "the due date and the order are other columns"
    assert (found["subtotal"], found["vat"], found["total"]) == ("100000.00", "19000.00", "119000.00")


def test_a_party_is_the_label_above_it_in_its_column_and_a_footer_provider_is_none() -> None:
    seller, buyer, provider = "830386001", "890718474", "811973514"
    boxes = _laid_out(
        (0.05, 0.10, "Facturador"), (0.55, 0.10, "Adquiriente"),
        (0.05, 0.12, "Razón social"), (0.55, 0.12, "Razón social"),
        (0.05, 0.135, "Palmeras de Tumaco Ltda."), (0.55, 0.135, "Frigorífico del Caribe S.A."),
        (0.05, 0.15, "NIT"), (0.55, 0.15, "NIT"),
        (0.05, 0.165, seller), (0.55, 0.165, buyer),
        (0.05, 0.18, "DV"), (0.55, 0.18, "DV"),
        (0.05, 0.195, str(check_digit(seller))), (0.55, 0.195, str(check_digit(buyer))),
        (0.05, 0.95, f"Proveedor tecnológico: Facturación Andina S.A.S. NIT {provider}-{check_digit(provider)}"),
    )  # fmt: skip
    found = _read(boxes, Source.OCR)
    assert (found["seller_nit"].value, found["seller_nit_dv"].value) == (seller, str(check_digit(seller)))
    assert (found["buyer_id"].value, found["buyer_id_dv"].value) == (buyer, str(check_digit(buyer)))
    assert found["buyer_name"].value == "Frigorífico del Caribe S.A."
    assert found["buyer_id"].confidence >= 0.9, "labelled, in its block, check digit verified"
    alone = _laid_out((0.05, 0.95, f"Proveedor tecnológico: Software S.A.S. NIT {provider}-{check_digit(provider)}"))
    assert "buyer_id" not in _read(alone)
    assert "seller_nit" not in _read(alone)


def test_totals_are_chosen_together_so_that_they_add_up() -> None:
    page = _laid_out(
        (0.05, 0.30, "Total ítems: 3"), (0.30, 0.30, "Unidades: 42"),
        (0.60, 0.35, "Subtotal:"), (0.80, 0.35, "$ 100.000,00"),
        (0.60, 0.37, "IVA 19%:"), (0.80, 0.37, "$ 19.000,00"),
        (0.60, 0.39, "Total:"), (0.80, 0.39, "$ 119.000,00"),
    )  # fmt: skip
    found = _read(page, Source.OCR)
    assert (found["subtotal"].value, found["vat"].value, found["total"].value) == ("100000.00", "19000.00", "119000.00")
    assert found["total"].confidence >= 0.9
    wrong = _read(_laid_out((0.60, 0.35, "Subtotal: $ 100.000,00"), (0.60, 0.37, "IVA: $ 19.000,00"),
                            (0.60, 0.39, "Total: $ 118.000,00")), Source.OCR)  # fmt: skip
    assert wrong["total"].value == "118000.00"
    assert wrong["total"].confidence < 0.9, "does not add up: not verified"


def test_a_cufe_wrapped_over_lines_is_joined_and_recomputed_with_the_test_key() -> None:
    from services.ocr.samples import sample_invoices

    invoice = sample_invoices(1)[0]
    cufe = invoice.cufe
    rows = [
        f"Factura electrónica de venta No. {invoice.number}",
        f"Fecha de emisión: {invoice.issue_date:%d/%m/%Y}   Hora: {invoice.issue_time[:8]}",
        f"{invoice.seller[0]} NIT {invoice.seller[1]}-{check_digit(invoice.seller[1])}",
        f"Cliente: {invoice.buyer[0]} NIT {invoice.buyer[1]}-{check_digit(invoice.buyer[1])}",
        f"Subtotal: $ {invoice.subtotal:.2f}".replace(".", ","),
        f"IVA: $ {invoice.vat:.2f}".replace(".", ","),
        f"Total a pagar: $ {invoice.total:.2f}".replace(".", ","),
        "CUFE:", cufe[:40], cufe[40:80], cufe[80:],
    ]  # fmt: skip
    found = _read("\n".join(rows), Source.OCR)
    assert found["cufe"].value == cufe
    assert all(found[n].confidence >= 0.9 for n in ("number", "cufe", "issue_date")), "the CUFE recomputes"
    tampered = _read("\n".join(rows).replace(invoice.number, invoice.number[:-1] + "0"), Source.OCR)
    assert tampered["cufe"].confidence < 0.9
    assert tampered["number"].confidence < 0.9


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


def test_cross_checks_lower_contradicting_values_and_warn_about_them() -> None:
    reading = Reading()
    for f in read_page(_words(PAGE.replace("860.034.313-7", "860.034.313-2")), Source.OCR, 1).fields:
        reading.offer(f)
    reading.lines = line_items(PAGE, Source.OCR)
    checked = cross_check(reading)
    assert [w.code for w in checked.warnings] == ["NIT_CHECK_DIGIT"]
    assert checked.fields["total"].confidence == reading.fields["total"].confidence  # 12.5M + 625k = 13.125M
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


def test_a_cufe_that_recomputes_from_the_fields_read_confirms_them_all() -> None:
    from services.ocr.samples import sample_invoices

    invoice = sample_invoices(1)[0]  # DIAN's test environment: its technical key is public
    values = {k: v for k, v in invoice.expected().items() if k != "seller_nit_dv"}
    assert to_confirm(_reading(Source.OCR, **values)) == []
    misread = {**values, "number": values["number"][:-1] + "7"}
    assert to_confirm(_reading(Source.OCR, **misread)) == ["number", "cufe", "seller_nit", "buyer_id"]  # totals add up


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


# ---------------------------------------------------------------- the CUFE read from a scan

TRUE_CUFE = "7ffb99dc1bc8587ee84193c63f31c945b8f1ec41ff1aae09072359018ac523a03bc15ad890bca77183520a4e6a16dc76"


def _misread(cufe: str, *at: int, by: str = "2") -> str:
    digits = list(cufe)
    for position in at:
        digits[position] = by if digits[position] != by else "0"
    return "".join(digits)


def test_readings_of_the_cufe_vote_digit_by_digit_even_when_one_dropped_a_character() -> None:
    from services.ocr.layout import consensus

    reads = [_misread(TRUE_CUFE, 10), _misread(TRUE_CUFE, 50, 90), TRUE_CUFE[:30] + TRUE_CUFE[31:]]
    assert consensus(reads) == TRUE_CUFE
    assert consensus([TRUE_CUFE[:95], TRUE_CUFE + "a"]) == "", "no reading of 96 digits: nothing to vote on"


def _test_environment_page(cufe_lines: tuple[str, str]) -> PageText:
    from services.ocr.samples import sample_invoices

    expected = sample_invoices(1)[0].expected()  # DIAN's test environment: its technical key is public
    assert expected["cufe"] == TRUE_CUFE
    return _laid_out(
        (0.05, 0.05, f"Factura electrónica de venta No. {expected['number']}"),
        (0.05, 0.08, "Fecha: 02/11/2026"), (0.40, 0.08, "Hora: 15:13:00"),
        (0.05, 0.14, "Vendedor"), (0.55, 0.14, "Cliente"),
        (0.05, 0.16, f"NIT {expected['seller_nit']}-{expected['seller_nit_dv']}"),
        (0.55, 0.16, f"NIT {expected['buyer_id']}"),
        (0.55, 0.40, "Subtotal"), (0.75, 0.40, "$ 60.628.000,00"),
        (0.55, 0.42, "IVA"), (0.75, 0.42, "$ 3.031.400,00"),
        (0.55, 0.44, "Total a pagar"), (0.75, 0.44, "$ 63.659.400,00"),
        (0.05, 0.50, "CUFE:"), (0.05, 0.52, cufe_lines[0]), (0.05, 0.54, cufe_lines[1]),
    )  # fmt: skip


def test_a_cufe_misread_in_a_few_digits_is_the_one_its_fields_recompute_and_confirms_them() -> None:
    misread = _misread(TRUE_CUFE, 3, 40, 77)
    found = {f.name: f for f in read_page(_test_environment_page((misread[:48], misread[48:])), Source.OCR).fields}
    assert found["cufe"].value == TRUE_CUFE
    assert all(found[n].confidence >= 0.9 for n in ("cufe", "number", "seller_nit", "buyer_id", "total"))


def test_a_cufe_far_from_the_one_recomputed_is_read_as_printed_and_confirms_nothing() -> None:
    other = _misread(TRUE_CUFE, *range(0, 96, 8))  # twelve digits off: another document's CUFE
    found = {f.name: f for f in read_page(_test_environment_page((other[:48], other[48:])), Source.OCR).fields}
    assert found["cufe"].value == other
    assert found["cufe"].confidence < 0.9
    assert found["number"].confidence < 0.9


def test_the_cufe_region_read_again_outvotes_the_pages_misreading() -> None:
    misread = _misread(TRUE_CUFE, 5)
    page = _laid_out((0.05, 0.50, "CUFE:"), (0.05, 0.52, misread[:48]), (0.05, 0.54, misread[48:]))
    regions: list[tuple[float, float, float, float]] = []

    def reread(box: tuple[float, float, float, float]) -> list[str]:
        regions.append(box)
        return [TRUE_CUFE[:48] + "\n" + TRUE_CUFE[48:], _misread(TRUE_CUFE, 60)]

    found = {f.name: f for f in read_page(page, Source.OCR, reread=reread).fields}
    assert found["cufe"].value == TRUE_CUFE
    assert found["cufe"].confidence < 0.8, "the readings disagreed: not labelled"
    ((left, top, _, height),) = regions
    assert left < 0.05, "the region holds the CUFE's first digits"
    assert top < 0.52, "and its first line"
    assert top + height > 0.552, "and its second"


def test_a_random_value_is_never_taken_for_a_misreading_of_another() -> None:
    import random

    from services.ocr.layout import _printed_as

    rng = random.Random(19)
    for _ in range(200):
        a, b = rng.randbytes(48).hex(), rng.randbytes(48).hex()
        assert not _printed_as(a, [b])
    assert _printed_as(TRUE_CUFE, [_misread(TRUE_CUFE, *range(0, 96, 12))])  # eight digits misread
