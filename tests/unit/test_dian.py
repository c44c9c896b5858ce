"""NIT check digits and CUFE against DIAN's known answers (domain.md) and the
external corpus when it is present."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from services.dian import cufe, nit
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"


@pytest.mark.parametrize(
    ("written", "dv"),
    [
        ("800197268-4", 4),
        ("860071250-9", 9),
        ("890903938-8", 8),
        ("899999068-1", 1),
        ("700085371-1", 1),
        ("860034313-7", 7),
    ],
)
def test_known_check_digits(written: str, dv: int) -> None:
    number = written.split("-")[0]
    assert nit.check_digit(number) == dv
    assert nit.parse(written) == nit.Nit(number, dv)


def test_remainders_zero_one_and_ten() -> None:
    """DV = s for s in {0, 1}, else 11 - s: 899999068 has remainder 1, 700085371 remainder 10."""
    assert nit.check_digit("899999068") == 1
    assert nit.check_digit("700085371") == 1


def test_dotted_form_and_wrong_digit() -> None:
    assert str(nit.parse("800.197.268-4")) == "800197268-4"
    with pytest.raises(nit.InvalidNit, match="check digit 4, not 5"):
        nit.parse("800197268-5")
    for bad in ("800197268", "80019726a-4", "800.19.268-4", "1234567890123456-1"):
        with pytest.raises(nit.InvalidNit):
            nit.parse(bad)


@pytest.mark.skipif(not (CORPUS / "nit-vectors.json").exists(), reason="shared corpus not present")
def test_corpus_nit_vectors() -> None:
    vectors = json.loads((CORPUS / "nit-vectors.json").read_text())["vectors"]
    assert len(vectors) >= 195
    mismatches = [v["nit"] for v in vectors if str(nit.check_digit(v["nit"])) != v["dv"]]
    assert mismatches == []


def test_cufe_dian_annex_example() -> None:
    fields = cufe.CufeFields(
        number="323200000129",
        issue_date=dt.date(2019, 1, 16),
        issue_time="10:53:10-05:00",
        line_extension=Decimal("1500000.00"),
        iva=Decimal("285000.00"),
        inc=Decimal("0"),
        ica=Decimal("0"),
        payable=Decimal("1785000.00"),
        issuer_nit="700085371",
        buyer_id="800199436",
        environment=cufe.PRODUCTION,
    )
    assert fields.cufe("693ff6f2a553c3646a063436fd4dd9ded0311471") == (
        "8bb918b19ba22a694f1da11c643b5e9de39adf60311cf179179e9b33381030bcd4c3c3f156c506ed5908f9276f5bd9b4"
    )


def test_cufe_dian_test_set_string() -> None:
    fields = cufe.CufeFields(
        number="SETP990000002",
        issue_date=dt.date(2019, 6, 20),
        issue_time="09:15:23-05:00",
        line_extension=Decimal("12600.06"),
        iva=Decimal("2424.01"),
        inc=Decimal("0.00"),
        ica=Decimal("0.00"),
        payable=Decimal("14024.07"),
        issuer_nit="900508908",
        buyer_id="900108281",
        environment=cufe.TEST,
    )
    expected_string = (
        "SETP9900000022019-06-2009:15:23-05:0012600.06012424.01040.00030.0014024.07900508908900108281"
        "fc8eac422eba16e22ffd8c6f94b3f40a6e38162c2"
    )
    assert fields.composition(cufe.TEST_ENVIRONMENT_KEY) == expected_string
    assert fields.cufe(cufe.TEST_ENVIRONMENT_KEY) == (
        "941cf36af62dbbc06f105d2a80e9bfe683a90e84960eae4d351cc3afbe8f848c26c39bac4fbc80fa254824c6369ea694"
    )


def test_amounts_are_truncated_not_rounded() -> None:
    assert cufe.amount(Decimal("1500000")) == "1500000.00"
    assert cufe.amount(Decimal("10.239")) == "10.23"
    assert cufe.amount(Decimal("0")) == "0.00"


@pytest.mark.skipif(not (CORPUS / "cufe-vectors.json").exists(), reason="shared corpus not present")
def test_corpus_cufe_and_cude_vectors() -> None:
    for vector in json.loads((CORPUS / "cufe-vectors.json").read_text()):
        inputs = vector["inputs"]
        composition = "".join(
            inputs[k]
            for k in ("NumFac", "FecFac", "HorFac", "ValFac", "CodImp1", "ValImp1", "CodImp2", "ValImp2",
                      "CodImp3", "ValImp3", "ValTot", "NitOFE", "NumAdq")
        ) + inputs["ClTec"] + inputs["TipoAmb"]  # fmt: skip
        fields = cufe.CufeFields(
            number=inputs["NumFac"],
            issue_date=dt.date.fromisoformat(inputs["FecFac"]),
            issue_time=inputs["HorFac"],
            line_extension=Decimal(inputs["ValFac"]),
            iva=Decimal(inputs["ValImp1"]),
            inc=Decimal(inputs["ValImp2"]),
            ica=Decimal(inputs["ValImp3"]),
            payable=Decimal(inputs["ValTot"]),
            issuer_nit=inputs["NitOFE"],
            buyer_id=inputs["NumAdq"],
            environment=int(inputs["TipoAmb"]),
        )
        # CUDE vectors carry the software PIN in the ClTec slot.
        assert fields.composition(inputs["ClTec"]) == composition
        assert fields.cufe(inputs["ClTec"]) == vector["expected_cufe"]
