"""UBL 2.1 parsing: the corpus samples parse (or are refused for the defect
they have), and hostile XML is refused before it is interpreted."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from services.invoice.domain import RegistrationPolicy, validate
from services.invoice.ubl import MAX_DEPTH, UblError, parse_document, safe_root
from tests.conftest import SHARED

XML = SHARED / "corpus" / "dian-xml"
needs_corpus = pytest.mark.skipif(not XML.exists(), reason="shared corpus not present")


def _sample(name: str) -> bytes:
    return (XML / name).read_bytes()


@needs_corpus
def test_signed_dian_sample_parses_with_its_fields() -> None:
    doc = parse_document(_sample("stenfrank-ubl21dian__invoice_signed_dian_v2.xml"))
    assert doc.number == "SETP990000002"
    assert doc.issue_date == dt.date(2019, 6, 20)
    assert doc.issue_time == "09:15:23-05:00"
    assert doc.environment == 2
    assert (doc.seller.number, doc.seller.check_digit) == ("800197268", "4")
    assert doc.buyer.number == "900108281"
    assert doc.totals.line_extension == Decimal("12600.06")
    assert doc.totals.payable == Decimal("14024.07")
    assert doc.tax_total(1) == Decimal("2424.01")
    assert doc.cufe.startswith("941cf36a")


@needs_corpus
def test_signed_dian_sample_fails_validation_for_the_defects_it_has() -> None:
    """The sample was hand-edited after hashing: its tax-inclusive total and first
    line do not add up and its CUFE does not match (corpus README)."""
    doc = parse_document(_sample("stenfrank-ubl21dian__invoice_signed_dian_v2.xml"))
    found = {i.reason for i in validate(doc, RegistrationPolicy(today=dt.date(2019, 6, 30)), {})}
    assert {"CUFE_MISMATCH", "TAX_INCLUSIVE_MISMATCH", "LINE_TOTAL_MISMATCH"} <= found
    assert "PAYABLE_MISMATCH" not in found  # 15,024.07 - 1,000.00 prepaid = 14,024.07


@needs_corpus
def test_unsigned_sample_with_bag_and_ic_taxes_parses() -> None:
    doc = parse_document(_sample("stenfrank-ubl21dian__invoice_unsigned_dian_v2.xml"))
    assert doc.number == "SETP990000008"
    assert {t.scheme for t in doc.taxes} >= {1, 22}
    assert len(doc.lines) >= 1


@needs_corpus
def test_legacy_sample_parses_but_its_sha1_uuid_is_not_a_cufe() -> None:
    doc = parse_document(_sample("stenfrank-ubl21dian__invoice_unsigned_sergio.xml"))
    assert len(doc.cufe) == 40
    found = {i.reason for i in validate(doc, RegistrationPolicy(today=dt.date(2019, 7, 30)), {})}
    assert "CUFE_MALFORMED" in found


@needs_corpus
@pytest.mark.parametrize(
    "name",
    [
        "stenfrank-ubl21dian__creditnote_singned_dian_v2.xml",
        "stenfrank-ubl21dian__creditnote_unsigned_dian_v2.xml",
        "stenfrank-ubl21dian__debitnote_signed_dian_v2.xml",
        "stenfrank-ubl21dian__debitnote_unsigned_dian_v2.xml",
    ],
)
def test_credit_and_debit_notes_are_not_invoices(name: str) -> None:
    with pytest.raises(UblError) as caught:
        parse_document(_sample(name))
    assert caught.value.reason == "UNSUPPORTED_DOCUMENT"


@needs_corpus
def test_attached_document_yields_the_wrapped_invoice() -> None:
    doc = parse_document(_sample("volt__attached_document_NC424.xml"))
    assert doc.number == "NC424"
    assert doc.environment == 1
    assert doc.totals.payable == Decimal("1065000.00")
    assert doc.cufe.startswith("e79f0bd4")
    assert doc.buyer.id_type == 13


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol2;</Invoice>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&xxe;</Invoice>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE Invoice SYSTEM "http://example.com/x.dtd"><Invoice/>"""


@pytest.mark.parametrize(
    ("data", "reason"), [(BILLION_LAUGHS, "FORBIDDEN"), (EXTERNAL_ENTITY, "FORBIDDEN"), (DTD_ONLY, "FORBIDDEN")]
)
def test_hostile_xml_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(UblError) as caught:
        safe_root(data)
    assert caught.value.reason.startswith(reason)


def test_deep_and_large_and_broken_documents_are_refused() -> None:
    deep = b"<a>" * (MAX_DEPTH + 5) + b"</a>" * (MAX_DEPTH + 5)
    for data, reason in [
        (deep, "TOO_DEEP"),
        (b"<a>" + b" " * (11 * 2**20) + b"</a>", "TOO_LARGE"),
        (b"<a><b></a>", "MALFORMED_XML"),
    ]:
        with pytest.raises(UblError) as caught:
            safe_root(data)
        assert caught.value.reason == reason


def test_missing_required_elements_are_named(tmp_path: Path) -> None:
    data = b"""<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
        xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"><cbc:ID>F1</cbc:ID></Invoice>"""
    with pytest.raises(UblError) as caught:
        parse_document(data)
    assert (caught.value.path, caught.value.reason) == ("cbc:UUID", "MISSING_ELEMENT")
