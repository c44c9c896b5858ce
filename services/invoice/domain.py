"""Invoice registration rules, free of I/O: the document, every check DIAN
and the exchange require (all failures at once, each with a field path and a
stable reason), and the registration's state machine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum, StrEnum
from typing import NamedTuple

from services.dian import cufe as cufe_rules
from services.dian.nit import check_digit

NIT = 31  # DIAN TipoIdFiscal of a NIT
CENT = Decimal("0.01")
TOLERANCE = CENT  # line and tax arithmetic may differ by one cent of rounding


class TaxScheme(int, Enum):
    """DIAN tax scheme codes (the numbers of bmc.common.v1.TaxScheme)."""

    IVA = 1
    IC = 2
    ICA = 3
    INC = 4
    RETE_IVA = 5
    RETE_FUENTE = 6
    RETE_ICA = 7
    BOLSAS = 22
    OTHER = 99

    @property
    def withholding(self) -> bool:
        return self in (TaxScheme.RETE_IVA, TaxScheme.RETE_FUENTE, TaxScheme.RETE_ICA)


class State(StrEnum):
    REGISTERED = "REGISTERED"
    COMMISSIONED = "COMMISSIONED"
    CERTIFIED = "CERTIFIED"
    ANNULLED = "ANNULLED"


# Steps other services report (a commission charged, a certificate issued):
# facts that happened, which reach the invoice through streams in whatever
# order. Each is recorded whenever it arrives; the state is the furthest step
# reached, and an annulled registration stays annulled.
REPORTED_STEPS: Mapping[str, State] = {"CommissionCalculated": State.COMMISSIONED, "InvoiceCertified": State.CERTIFIED}
_PROGRESS = (State.REGISTERED, State.COMMISSIONED, State.CERTIFIED)


class IllegalTransition(ValueError):
    def __init__(self, state: State | None, event: str) -> None:
        where = state.value if state else "a new invoice"
        super().__init__(f"{event} cannot happen to {where}")
        self.state, self.event = state, event


def next_state(state: State | None, event: str) -> State:
    """The state after `event`. Registration only starts an invoice and an
    annulment only ends a live one; a reported step is accepted in any state
    of an existing invoice and never moves it back."""
    if event == "InvoiceRegistered" and state is None:
        return State.REGISTERED
    if event == "InvoiceAnnulled" and state not in (None, State.ANNULLED):
        return State.ANNULLED
    reached = REPORTED_STEPS.get(event)
    if reached is not None and state is not None:
        if state is State.ANNULLED:
            return state
        return max(state, reached, key=_PROGRESS.index)
    raise IllegalTransition(state, event)


class Issue(NamedTuple):
    """One failed rule."""

    field: str
    reason: str
    description: str


@dataclass(frozen=True)
class Party:
    id_type: int
    number: str
    check_digit: str
    legal_name: str


@dataclass(frozen=True)
class Tax:
    scheme: int
    percent: Decimal
    taxable: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Line:
    number: int
    product_code: str
    description: str
    quantity: Decimal
    unit_code: str
    unit_price: Decimal
    line_extension: Decimal
    taxes: tuple[Tax, ...] = ()


@dataclass(frozen=True)
class Totals:
    line_extension: Decimal
    payable: Decimal
    tax_exclusive: Decimal | None = None
    tax_inclusive: Decimal | None = None
    allowance: Decimal = Decimal(0)
    charge: Decimal = Decimal(0)
    prepaid: Decimal = Decimal(0)


@dataclass(frozen=True)
class InvoiceDocument:
    """An invoice as submitted for registration."""

    number: str
    cufe: str
    environment: int  # 1 production, 2 test (TipoAmbiente)
    issue_date: dt.date
    issue_time: str
    currency: str
    seller: Party
    buyer: Party
    lines: tuple[Line, ...]
    taxes: tuple[Tax, ...]
    totals: Totals

    def tax_total(self, scheme: TaxScheme) -> Decimal:
        return sum((t.amount for t in self.taxes if t.scheme == scheme), Decimal(0))

    def cufe_fields(self) -> cufe_rules.CufeFields:
        return cufe_rules.CufeFields(
            number=self.number,
            issue_date=self.issue_date,
            issue_time=self.issue_time,
            line_extension=self.totals.line_extension,
            iva=self.tax_total(TaxScheme.IVA),
            inc=self.tax_total(TaxScheme.INC),
            ica=self.tax_total(TaxScheme.ICA),
            payable=self.totals.payable,
            issuer_nit=self.seller.number,
            buyer_id=self.buyer.number,
            environment=self.environment,
        )


@dataclass(frozen=True)
class ProductFacts:
    """What registration needs to know of a catalog product."""

    eligible: bool
    active: bool
    category: str = ""  # bmc.product.v1.Category name, for the commission
    withholding_class: str = ""  # bmc.common.v1.WithholdingClass name, for the withholding estimate


@dataclass(frozen=True)
class RegistrationPolicy:
    """The configurable part of the rules (values are data, not constants)."""

    today: dt.date
    max_age_days: int = 180  # broker FAQ; BMC's official rule not found (domain.md)
    same_or_previous_month: bool = False
    currencies: frozenset[str] = frozenset({"COP"})
    # Technical keys (ClTec) known per issuer NIT, to recompute production CUFEs.
    technical_keys: Mapping[str, str] = field(default_factory=dict)

    def technical_key(self, document: InvoiceDocument) -> str | None:
        if document.environment == cufe_rules.TEST:
            return cufe_rules.TEST_ENVIRONMENT_KEY
        return self.technical_keys.get(document.seller.number)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _party_issues(party: Party, path: str, must_be_nit: bool) -> list[Issue]:
    issues = []
    if must_be_nit and party.id_type != NIT:
        issues.append(Issue(f"{path}.id.type", "NIT_REQUIRED", "the buyer must be identified by its NIT"))
    if party.id_type == NIT:
        if not party.number.isdigit():
            issues.append(Issue(f"{path}.id.number", "NIT_MALFORMED", "a NIT has digits only, without the DV"))
        elif str(check_digit(party.number)) != party.check_digit:
            expected = check_digit(party.number)
            issues.append(
                Issue(
                    f"{path}.id.check_digit",
                    "NIT_CHECK_DIGIT_MISMATCH",
                    f"NIT {party.number} has check digit {expected}, not {party.check_digit or 'none'}",
                )
            )
    return issues


def _line_issues(line: Line, index: int) -> list[Issue]:
    path = f"lines[{index}]"
    issues = []
    if line.quantity <= 0:
        issues.append(Issue(f"{path}.quantity", "QUANTITY_NOT_POSITIVE", "quantity must be greater than zero"))
    expected = _cents(line.quantity * line.unit_price)
    if abs(expected - line.line_extension) > TOLERANCE:
        issues.append(
            Issue(
                f"{path}.line_extension_amount",
                "LINE_TOTAL_MISMATCH",
                f"{line.quantity} × {line.unit_price} = {expected}, line says {line.line_extension}",
            )
        )
    for t, tax in enumerate(line.taxes):
        issues += _tax_issues(tax, f"{path}.taxes[{t}]")
    return issues


def _tax_issues(tax: Tax, path: str, rounded_parts: int = 1) -> list[Issue]:
    """The tax must be its rate of its base; a total made of `rounded_parts`
    line taxes, each rounded to the cent, may differ by a cent per part."""
    if tax.taxable == 0 and tax.percent == 0:
        return []  # a per-unit tax (plastic bags): no percentage to check
    expected = _cents(tax.taxable * tax.percent / 100)
    if abs(expected - tax.amount) > TOLERANCE * max(1, rounded_parts):
        return [
            Issue(
                f"{path}.tax_amount",
                "TAX_AMOUNT_MISMATCH",
                f"{tax.percent}% of {tax.taxable} = {expected}, document says {tax.amount}",
            )
        ]
    return []


def _total_issues(doc: InvoiceDocument) -> list[Issue]:
    issues = []
    totals = doc.totals
    lines_sum = sum((line.line_extension for line in doc.lines), Decimal(0))
    if lines_sum != totals.line_extension:
        issues.append(
            Issue(
                "totals.line_extension_amount",
                "SUBTOTAL_MISMATCH",
                f"the lines add up to {lines_sum}, the document says {totals.line_extension}",
            )
        )
    for t, tax in enumerate(doc.taxes):
        parts = sum(
            1 for line in doc.lines for lt in line.taxes if (lt.scheme, lt.percent) == (tax.scheme, tax.percent)
        )
        issues += _tax_issues(tax, f"taxes[{t}]", parts)
    line_taxes: dict[tuple[int, Decimal], Decimal] = {}
    for line in doc.lines:
        for tax in line.taxes:
            key = (tax.scheme, tax.percent)
            line_taxes[key] = line_taxes.get(key, Decimal(0)) + tax.amount
    for (scheme, percent), amount in sorted(line_taxes.items()):
        declared = sum((t.amount for t in doc.taxes if (t.scheme, t.percent) == (scheme, percent)), Decimal(0))
        if abs(declared - amount) > TOLERANCE * max(1, len(doc.lines)):
            issues.append(
                Issue(
                    "taxes",
                    "TAX_TOTAL_MISMATCH",
                    f"line taxes of scheme {scheme} at {percent}% add up to {amount}, the document says {declared}",
                )
            )
    charged_taxes = sum((t.amount for t in doc.taxes if not TaxScheme(t.scheme).withholding), Decimal(0))
    if totals.tax_inclusive is not None:
        base = totals.tax_exclusive if totals.tax_exclusive is not None else totals.line_extension
        if abs(base + charged_taxes - totals.tax_inclusive) > TOLERANCE:
            issues.append(
                Issue(
                    "totals.tax_inclusive_amount",
                    "TAX_INCLUSIVE_MISMATCH",
                    f"{base} + taxes {charged_taxes} = {base + charged_taxes}, document says {totals.tax_inclusive}",
                )
            )
        gross = totals.tax_inclusive
    else:
        gross = totals.line_extension + charged_taxes
    payable = gross - totals.allowance + totals.charge - totals.prepaid
    if abs(payable - totals.payable) > TOLERANCE:
        issues.append(
            Issue(
                "totals.payable_amount",
                "PAYABLE_MISMATCH",
                f"{gross} − allowances {totals.allowance} + charges {totals.charge} − prepaid {totals.prepaid} = "
                f"{payable}, the document says {totals.payable}",
            )
        )
    return issues


def _date_issues(doc: InvoiceDocument, policy: RegistrationPolicy) -> list[Issue]:
    if doc.issue_date > policy.today:
        return [Issue("issue_date", "ISSUE_DATE_IN_FUTURE", f"{doc.issue_date} is after today ({policy.today})")]
    if policy.same_or_previous_month:
        first_allowed = (policy.today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
        if doc.issue_date < first_allowed:
            return [
                Issue(
                    "issue_date",
                    "OUTSIDE_REGISTRATION_WINDOW",
                    f"only invoices issued since {first_allowed} can be registered",
                )
            ]
    elif (policy.today - doc.issue_date).days > policy.max_age_days:
        return [
            Issue(
                "issue_date",
                "OUTSIDE_REGISTRATION_WINDOW",
                f"issued {(policy.today - doc.issue_date).days} days ago; at most {policy.max_age_days} are allowed",
            )
        ]
    return []


def _cufe_issues(doc: InvoiceDocument, policy: RegistrationPolicy) -> list[Issue]:
    if not cufe_rules.well_formed(doc.cufe):
        return [Issue("cufe", "CUFE_MALFORMED", "a CUFE is 96 hexadecimal characters (SHA-384)")]
    key = policy.technical_key(doc)
    if key is None:
        return []  # the issuer's technical key is unknown: the form is all that can be checked
    expected = doc.cufe_fields().cufe(key)
    if expected != doc.cufe.lower():
        return [
            Issue(
                "cufe",
                "CUFE_MISMATCH",
                f"the CUFE does not match the document's fields and technical key (expected {expected[:12]}…)",
            )
        ]
    return []


def _product_issues(doc: InvoiceDocument, products: Mapping[str, ProductFacts]) -> list[Issue]:
    issues = []
    for index, line in enumerate(doc.lines):
        path = f"lines[{index}].product_code"
        facts = products.get(line.product_code)
        if facts is None:
            issues.append(Issue(path, "UNKNOWN_PRODUCT", f"{line.product_code!r} is not in the product catalog"))
        elif not facts.active:
            issues.append(Issue(path, "PRODUCT_INACTIVE", f"{line.product_code!r} has been withdrawn from the catalog"))
        elif not facts.eligible:
            issues.append(
                Issue(
                    path,
                    "PRODUCT_NOT_ELIGIBLE",
                    f"{line.product_code!r} is not an agricultural, livestock or fishing good without industrial "
                    "processing",
                )
            )
    return issues


def validate(doc: InvoiceDocument, policy: RegistrationPolicy, products: Mapping[str, ProductFacts]) -> list[Issue]:
    """Every rule the document breaks; empty when it may be registered."""
    issues: list[Issue] = []
    issues += _party_issues(doc.seller, "seller", must_be_nit=False)
    issues += _party_issues(doc.buyer, "buyer", must_be_nit=False)
    issues += _cufe_issues(doc, policy)
    if doc.currency not in policy.currencies:
        issues.append(
            Issue("currency_code", "CURRENCY_NOT_ACCEPTED", f"{doc.currency} is not one of {sorted(policy.currencies)}")
        )
    issues += _date_issues(doc, policy)
    if not doc.lines:
        issues.append(Issue("lines", "NO_LINES", "an invoice needs at least one line"))
    for index, line in enumerate(doc.lines):
        issues += _line_issues(line, index)
    issues += _total_issues(doc)
    issues += _product_issues(doc, products)
    return issues


def product_codes(doc: InvoiceDocument) -> Sequence[str]:
    return list(dict.fromkeys(line.product_code for line in doc.lines))
