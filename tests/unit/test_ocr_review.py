"""Registering a draft the OCR service read (services/invoice/ocr_review.py)
and reviewing one at the terminal (services/cli/ocr.py): which key fields
still wait for a person, and what a confirmation or a correction does."""

from __future__ import annotations

from bmc.invoice.v1 import invoice_pb2
from bmc.ocr.v1 import ocr_pb2
from services.cli.ocr import parse_confirmations, review
from services.dian.nit import check_digit
from services.invoice.ocr_review import unconfirmed

READ_CUFE = "a" * 96


def _read() -> invoice_pb2.Invoice:
    draft = invoice_pb2.Invoice(number="FE1001", cufe=READ_CUFE)
    draft.seller.id.number, draft.buyer.id.number = "900123456", "800197268"
    draft.totals.payable_amount = "119.00"
    return draft


def _extraction(*to_confirm: str) -> ocr_pb2.Extraction:
    return ocr_pb2.Extraction(name="extractions/x1", draft=_read(), fields_to_confirm=to_confirm)


def test_fields_to_confirm_wait_until_named() -> None:
    submitted = _read()
    assert unconfirmed(submitted, _read(), ["cufe", "number"], []) == ["cufe", "number"]
    assert unconfirmed(submitted, _read(), ["cufe", "number"], ["cufe"]) == ["number"]
    assert unconfirmed(submitted, _read(), ["cufe", "number"], ["number", "cufe"]) == []


def test_a_key_field_changed_from_what_was_read_must_be_named_too() -> None:
    submitted = _read()
    submitted.buyer.id.number = "800197269"  # a verified field, changed without saying so
    submitted.totals.payable_amount = "119"  # the same amount, written differently: not a change
    assert unconfirmed(submitted, _read(), [], []) == ["buyer_id"]
    assert unconfirmed(submitted, _read(), [], ["buyer_id"]) == []


def test_confirming_as_read_or_corrected() -> None:
    right_cufe = "b" * 96
    draft, waiting = review(
        _extraction("cufe", "number", "seller_nit"),
        parse_confirmations([f"cufe={right_cufe.upper()}", "number", "seller_nit=900123457"]),
        ask=None,
    )
    assert waiting == []
    assert draft.cufe == right_cufe, "corrected (CUFEs are lower-case hexadecimal)"
    assert draft.number == "FE1001", "confirmed as read"
    assert (draft.seller.id.number, draft.seller.id.check_digit) == ("900123457", str(check_digit("900123457")))
    assert list(draft.ocr_review.confirmed_fields) == ["cufe", "number", "seller_nit"]
    assert draft.ocr_review.extraction == "extractions/x1"


def test_without_a_confirmation_or_a_person_to_ask_the_draft_waits() -> None:
    _, waiting = review(_extraction("cufe", "number"), parse_confirmations(["number"]), ask=None)
    assert waiting == ["cufe"]
    asked: list[tuple[str, str]] = []

    def person(field: str, as_read: str) -> str | None:
        asked.append((field, as_read))
        return None if field == "cufe" else as_read

    _, waiting = review(_extraction("cufe", "number"), {}, ask=person)
    assert asked == [("cufe", READ_CUFE), ("number", "FE1001")]
    assert waiting == ["cufe"]
