"""Invoice registration rules: every check, all failures at once, the state
machine, and properties of the totals arithmetic."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.dian import cufe
from services.invoice.domain import (
    NIT,
    IllegalTransition,
    InvoiceDocument,
    Line,
    Party,
    ProductFacts,
    RegistrationPolicy,
    State,
    Tax,
    TaxScheme,
    Totals,
    next_state,
    validate,
)

TODAY = dt.date(2026, 11, 28)
PRODUCTS = {"MAIZ-AMARILLO": ProductFacts(eligible=True, active=True), "CAFE-PERGAMINO": ProductFacts(True, True)}


def document(**changes: object) -> InvoiceDocument:
    """A consistent test-environment invoice: 10 t of maize at 1,250,000 + 5% IVA."""
    line = Line(1, "MAIZ-AMARILLO", "Maíz amarillo", Decimal("10"), "TNE", Decimal("1250000"), Decimal("12500000.00"),
                (Tax(TaxScheme.IVA, Decimal("5"), Decimal("12500000.00"), Decimal("625000.00")),))  # fmt: skip
    doc = InvoiceDocument(
        number="SETP990000123",
        cufe="0" * 96,
        environment=cufe.TEST,
        issue_date=dt.date(2026, 11, 20),
        issue_time="10:15:00-05:00",
        currency="COP",
        seller=Party(NIT, "900508908", "9", "Agropecuaria El Llano S.A.S."),
        buyer=Party(NIT, "860034313", "7", "Molinos del Centro S.A."),
        lines=(line,),
        taxes=(Tax(TaxScheme.IVA, Decimal("5"), Decimal("12500000.00"), Decimal("625000.00")),),
        totals=Totals(
            line_extension=Decimal("12500000.00"),
            tax_exclusive=Decimal("12500000.00"),
            tax_inclusive=Decimal("13125000.00"),
            payable=Decimal("13125000.00"),
        ),
    )
    doc = replace(doc, **changes)  # type: ignore[arg-type]
    if "cufe" not in changes:
        doc = replace(doc, cufe=doc.cufe_fields().cufe(cufe.TEST_ENVIRONMENT_KEY))
    return doc


def reasons(doc: InvoiceDocument, policy: RegistrationPolicy | None = None) -> list[tuple[str, str]]:
    return [(i.field, i.reason) for i in validate(doc, policy or RegistrationPolicy(today=TODAY), PRODUCTS)]


def test_a_consistent_invoice_passes() -> None:
    assert reasons(document()) == []


def test_nit_check_digits_of_seller_and_buyer() -> None:
    doc = document(seller=Party(NIT, "900508908", "3", "X"), buyer=Party(NIT, "860034313", "1", "Y"))
    assert reasons(doc) == [
        ("seller.id.check_digit", "NIT_CHECK_DIGIT_MISMATCH"),
        ("buyer.id.check_digit", "NIT_CHECK_DIGIT_MISMATCH"),
    ]


def test_a_seller_with_a_cedula_has_no_check_digit() -> None:
    assert reasons(document(seller=Party(13, "79123456", "", "Pedro Pérez"))) == []


def test_cufe_is_recomputed_for_test_environment_documents() -> None:
    assert reasons(document(cufe="a" * 96)) == [("cufe", "CUFE_MISMATCH")]
    assert reasons(document(cufe="xyz")) == [("cufe", "CUFE_MALFORMED")]


def test_production_cufe_is_checked_only_when_the_issuer_key_is_known() -> None:
    doc = document(environment=cufe.PRODUCTION, cufe="b" * 96)
    assert reasons(doc) == []
    key = "693ff6f2a553c3646a063436fd4dd9ded0311471"
    policy = RegistrationPolicy(today=TODAY, technical_keys={"900508908": key})
    assert reasons(doc, policy) == [("cufe", "CUFE_MISMATCH")]
    good = document(environment=cufe.PRODUCTION, cufe=doc.cufe_fields().cufe(key))
    assert reasons(good, policy) == []


def test_line_tax_and_payable_arithmetic() -> None:
    bad_line = replace(document().lines[0], line_extension=Decimal("12000000.00"))
    assert ("lines[0].line_extension_amount", "LINE_TOTAL_MISMATCH") in reasons(document(lines=(bad_line,)))
    bad_tax = (Tax(TaxScheme.IVA, Decimal("5"), Decimal("12500000.00"), Decimal("600000.00")),)
    assert ("taxes[0].tax_amount", "TAX_AMOUNT_MISMATCH") in reasons(document(taxes=bad_tax))
    bad_totals = replace(document().totals, payable=Decimal("13125000.02"))
    assert reasons(document(totals=bad_totals)) == [("totals.payable_amount", "PAYABLE_MISMATCH")]


def test_prepaid_amounts_reduce_the_payable() -> None:
    totals = replace(document().totals, prepaid=Decimal("125000.00"), payable=Decimal("13000000.00"))
    assert reasons(document(totals=totals)) == []


def test_withholdings_do_not_count_as_charged_taxes() -> None:
    withholding = Tax(TaxScheme.RETE_FUENTE, Decimal("1.5"), Decimal("12500000.00"), Decimal("187500.00"))
    assert reasons(document(taxes=(*document().taxes, withholding))) == []


def test_dates_future_and_window() -> None:
    assert reasons(document(issue_date=dt.date(2026, 11, 29))) == [("issue_date", "ISSUE_DATE_IN_FUTURE")]
    assert reasons(document(issue_date=dt.date(2026, 5, 1))) == [("issue_date", "OUTSIDE_REGISTRATION_WINDOW")]
    monthly = RegistrationPolicy(today=TODAY, same_or_previous_month=True)
    assert reasons(document(issue_date=dt.date(2026, 10, 1)), monthly) == []
    assert reasons(document(issue_date=dt.date(2026, 9, 30)), monthly) == [
        ("issue_date", "OUTSIDE_REGISTRATION_WINDOW")
    ]


def test_products_must_exist_be_active_and_eligible() -> None:
    lines = [replace(document().lines[0], product_code=c) for c in ("NOPE", "AZUCAR", "VIEJO")]
    facts = {**PRODUCTS, "AZUCAR": ProductFacts(eligible=False, active=True), "VIEJO": ProductFacts(True, False)}
    doc = document(lines=tuple(lines))
    found = [(i.field, i.reason) for i in validate(doc, RegistrationPolicy(today=TODAY), facts)]
    assert ("lines[0].product_code", "UNKNOWN_PRODUCT") in found
    assert ("lines[1].product_code", "PRODUCT_NOT_ELIGIBLE") in found
    assert ("lines[2].product_code", "PRODUCT_INACTIVE") in found


def test_every_failure_is_reported_at_once() -> None:
    doc = document(
        currency="USD",
        cufe="a" * 96,
        issue_date=dt.date(2030, 1, 1),
        seller=Party(NIT, "900508908", "0", "X"),
        lines=(replace(document().lines[0], product_code="NOPE"),),
    )
    assert {r for _, r in reasons(doc)} >= {
        "CURRENCY_NOT_ACCEPTED",
        "ISSUE_DATE_IN_FUTURE",
        "NIT_CHECK_DIGIT_MISMATCH",
        "UNKNOWN_PRODUCT",
        "CUFE_MISMATCH",
    }


def test_state_machine() -> None:
    assert next_state(None, "InvoiceRegistered") is State.REGISTERED
    assert next_state(State.REGISTERED, "CommissionCalculated") is State.COMMISSIONED
    assert next_state(State.COMMISSIONED, "InvoiceCertified") is State.CERTIFIED
    assert next_state(State.CERTIFIED, "InvoiceAnnulled") is State.ANNULLED
    assert next_state(State.CERTIFIED, "CommissionCalculated") is State.CERTIFIED, "late, recorded, never backwards"
    assert next_state(State.ANNULLED, "InvoiceCertified") is State.ANNULLED, "reported after the annulment"
    for state, event in [
        (State.ANNULLED, "InvoiceAnnulled"),
        (None, "InvoiceAnnulled"),
        (None, "CommissionCalculated"),
        (State.REGISTERED, "InvoiceRegistered"),
    ]:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


@given(
    steps=st.permutations(["CommissionCalculated", "InvoiceCertified", "CommissionCalculated", "InvoiceCertified"]),
    annul_at=st.none() | st.integers(min_value=0, max_value=4),
)
def test_reported_steps_in_any_order_end_in_the_same_state(steps: list[str], annul_at: int | None) -> None:
    """Deliveries of the commission and certificate steps (redelivered, swapped)
    and an annulment anywhere among them: every one is accepted, and the state
    is the same as in the orderly sequence."""
    events = list(steps)
    if annul_at is not None:
        events.insert(annul_at, "InvoiceAnnulled")
    state = next_state(None, "InvoiceRegistered")
    for event in events:
        state = next_state(state, event)
    assert state is (State.ANNULLED if annul_at is not None else State.CERTIFIED)


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000000"), places=2)
quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("10000"), places=3)
rates = st.sampled_from([Decimal("0"), Decimal("5"), Decimal("19")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(quantities, money, rates), min_size=1, max_size=8))
# Found by hypothesis: four lines rounded to the cent one by one add up to a
# document tax two cents away from the rate applied to their summed base.
@example([(Decimal("0.001"), Decimal("55822.83"), Decimal(5)), (Decimal("0.001"), Decimal("143894.99"), Decimal(5)),
          (Decimal("0.059"), Decimal("1.77"), Decimal(5)), (Decimal("0.033"), Decimal("28117.86"), Decimal(5)),
          (Decimal("0.001"), Decimal("1562506.21"), Decimal(19))])  # fmt: skip
def test_documents_built_from_their_lines_always_add_up(items: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    """Whatever the lines, a document whose totals are computed from them the
    way an issuer does (cents half-up per line) passes every arithmetic rule."""
    lines, taxes = [], {}
    for number, (quantity, price, rate) in enumerate(items, start=1):
        extension = (quantity * price).quantize(Decimal("0.01"))
        tax = (extension * rate / 100).quantize(Decimal("0.01"))
        lines.append(Line(number, "MAIZ-AMARILLO", "x", quantity, "KGM", price, extension,
                          (Tax(TaxScheme.IVA, rate, extension, tax),)))  # fmt: skip
        base, amount = taxes.get(rate, (Decimal(0), Decimal(0)))
        taxes[rate] = (base + extension, amount + tax)
    subtotal = sum((line.line_extension for line in lines), Decimal(0))
    doc_taxes = tuple(Tax(TaxScheme.IVA, rate, base, amount) for rate, (base, amount) in taxes.items())
    total = subtotal + sum((t.amount for t in doc_taxes), Decimal(0))
    doc = document(
        lines=tuple(lines),
        taxes=doc_taxes,
        totals=Totals(line_extension=subtotal, tax_exclusive=subtotal, tax_inclusive=total, payable=total),
    )
    arithmetic = {"LINE_TOTAL_MISMATCH", "TAX_AMOUNT_MISMATCH", "SUBTOTAL_MISMATCH", "TAX_TOTAL_MISMATCH",
                  "TAX_INCLUSIVE_MISMATCH", "PAYABLE_MISMATCH"}  # fmt: skip
    assert [r for r in reasons(doc) if r[1] in arithmetic] == []


@settings(max_examples=100, deadline=None)
@given(money)
def test_any_change_of_the_payable_beyond_a_cent_is_caught(delta: Decimal) -> None:
    totals = replace(document().totals, payable=document().totals.payable + delta + Decimal("0.01"))
    assert ("totals.payable_amount", "PAYABLE_MISMATCH") in reasons(document(totals=totals))


# ---------------------------------------------------------------- hash chain

from services.invoice import chain  # noqa: E402


def _events(count: int) -> list[chain.ChainedEvent]:
    events, previous = [], chain.GENESIS
    moment = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    for position in range(1, count + 1):
        event = chain.ChainedEvent(
            position, f"e{position}", f"inv{position % 3}", 1, "InvoiceRegistered", {"n": position, "amount": "1.00"},
            {"actor": "t"}, moment + dt.timedelta(seconds=position), previous,
        )  # fmt: skip
        event = replace(event, hash=event.computed_hash())
        previous = event.hash
        events.append(event)
    return events


def test_an_untouched_chain_verifies() -> None:
    report = chain.verify(_events(20))
    assert report.intact
    assert report.checked == 20


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=19), st.sampled_from(["data", "type", "metadata", "delete", "swap"]))
def test_any_alteration_is_found_at_its_position(index: int, how: str) -> None:
    events = _events(20)
    if how == "delete":
        del events[index]
        expected = index + 1
    elif how == "swap":
        other = (index + 1) % 20
        events[index], events[other] = events[other], events[index]
        expected = min(index, other) + 1
    else:
        altered = {"data": {"n": -1}, "type": "InvoiceAnnulled", "metadata": {"actor": "mallory"}}[how]
        events[index] = replace(events[index], **{how: altered})
        expected = index + 1
    report = chain.verify(events)
    if how == "delete" and index == 19:
        assert report.intact  # removing the last event is caught by the head hash, see below
        assert report.head_hash != _events(20)[-1].hash
    else:
        assert not report.intact
        assert report.first_broken_position == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_a_document_serialized_ahead_hashes_as_the_one_read_back(document: dict[str, object]) -> None:
    """Registration serializes a document once, outside the chain lock, and
    embeds the text; the verifier hashes the parsed JSON it reads back."""
    moment = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    written = chain.ChainedEvent(
        7, "e7", "inv", 1, "InvoiceRegistered", {"document": orjson.Fragment(chain.canonical(document)), "n": "1"},
        {"actor": "t"}, moment, chain.GENESIS,
    )  # fmt: skip
    read_back = replace(written, data=orjson.loads(chain.canonical(written.data)))
    assert read_back.data == {"document": document, "n": "1"}
    assert read_back.computed_hash() == written.computed_hash()
