"""How the OCR reads invoices laid out as it has never seen: the held-out
layout families of `services.ocr.families` (never looked at while the
reader was developed), scanned at 200 dpi without a QR code, read by the
real pipeline (deskew, Tesseract in Spanish, the geometric reader), two
documents at a time. Prints field accuracy per family, the development
families' figure beside it for the gap, a reliability table per confidence
band, and whether any decoy (the technology provider's NIT, the numbering
resolution, a purchase order, a bank account) came out as a party, the
invoice number or a total."""

from __future__ import annotations

import concurrent.futures
from collections import defaultdict

import pytest

from services.ocr.domain import Reading
from services.ocr.families import (
    DEVELOPMENT,
    HELD_OUT,
    KEY_FIELDS,
    FamilyInvoice,
    Grade,
    accuracy,
    graded,
    invoices_of,
    render,
)
from services.ocr.reading import Limits, load_worker_engine, read_in_worker
from services.ocr.samples import scan

PER_FAMILY = 3
# Issue #19's targets on the held-out families (measured: key fields 95.4%,
# all 93.4%; Tesseract is deterministic on the same pixels, and the pixels
# are seeded).
KEY_FLOOR, ALL_FLOOR = 0.95, 0.90


def _scan(invoice: FamilyInvoice) -> bytes:
    return scan(render(invoice), int(invoice.consecutive) % 1000, 200)


def _read_all(invoices: list[FamilyInvoice]) -> list[tuple[FamilyInvoice, Reading]]:
    contents = [_scan(invoice) for invoice in invoices]
    with concurrent.futures.ProcessPoolExecutor(2, initializer=load_worker_engine) as pool:
        readings = pool.map(read_in_worker, contents, [Limits()] * len(contents), [""] * len(contents))
        return [(invoice, reading) for invoice, (reading, _, _) in zip(invoices, readings, strict=True)]


@pytest.fixture(scope="module")
def held_out() -> list[tuple[FamilyInvoice, Reading]]:
    return _read_all(list(invoices_of(HELD_OUT, PER_FAMILY)))


def _grades(results: list[tuple[FamilyInvoice, Reading]]) -> list[Grade]:
    return [grade for invoice, reading in results for grade in graded(invoice, reading)]


def test_held_out_layouts_scanned_at_200_dpi_without_a_qr_code(held_out: list[tuple[FamilyInvoice, Reading]]) -> None:
    grades = _grades(held_out)
    key, every = accuracy(grades)
    per_family = {f: f"{accuracy(g for g in grades if g.family == f)[1]:.0%}" for f in HELD_OUT}
    print(f"\nheld-out families, 200-dpi scans, no QR: key fields {key:.1%}, all fields {every:.1%}; {per_family}")
    assert key >= KEY_FLOOR, f"key fields {key:.1%}"
    assert every >= ALL_FLOOR, f"all fields {every:.1%}"


def test_development_families_for_the_gap() -> None:
    key, every = accuracy(_grades(_read_all(list(invoices_of(DEVELOPMENT, 1, seed=1)))))
    print(f"\ndevelopment families (other invoices than developed on): key {key:.1%}, all {every:.1%}")
    assert key >= KEY_FLOOR


def test_confidence_means_something(held_out: list[tuple[FamilyInvoice, Reading]]) -> None:
    bands: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for grade in _grades(held_out):
        if grade.confidence:
            band = next(b for b in ("0.9", "0.8", "0.5", "0.0") if grade.confidence >= float(b))
            bands[band][0] += grade.right
            bands[band][1] += 1
    table = {band: f"{r}/{n} right ({r / n:.1%})" for band, (r, n) in sorted(bands.items(), reverse=True)}
    print("\nreliability by confidence band:", table)
    right, total = bands["0.9"]
    assert total, "no field reported at >= 0.9"
    assert right / total >= 0.99, f"fields reported at >= 0.9: {right}/{total} right"


def test_no_decoy_comes_out_as_a_party_a_number_or_a_total(held_out: list[tuple[FamilyInvoice, Reading]]) -> None:
    taken = []
    for invoice, reading in held_out:
        decoys = set(invoice.decoys.values().values())
        for name in ("seller_nit", "buyer_id", "number", "total"):
            found = reading.fields.get(name)
            if found and found.value in decoys and found.confidence >= 0.5:
                taken.append(f"{invoice.family}: {name}={found.value} ({found.confidence:.2f})")
    print(f"\ndecoys taken with confidence >= 0.5: {len(taken)}")
    assert not taken


def test_through_the_qr_code_every_field_is_right() -> None:
    invoices = list(invoices_of(HELD_OUT, 1, seed=2, qr=True))
    wrong = [(g.family, g.field) for g in _grades(_read_all(invoices)) if not g.right and g.field in KEY_FIELDS]
    print(f"\nheld-out families with the QR code: {len(invoices) * len(KEY_FIELDS) - len(wrong)} key fields right")
    assert not wrong
