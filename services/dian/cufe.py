"""The CUFE (Código Único de Factura Electrónica), DIAN Anexo Técnico 1.8.

    CUFE = SHA-384(NumFac + FecFac + HorFac + ValFac + "01" + ValImp1 + "04" + ValImp2
                   + "03" + ValImp3 + ValTot + NitOFE + NumAdq + ClTec + TipoAmbiente)

Only the issuer (and DIAN) know ClTec, so a registering party can always
check the CUFE's form but recompute it only when the key is known.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

CUFE_PATTERN = re.compile(r"^[0-9a-f]{96}$")
# The technical key of DIAN's habilitación (test) environment.
TEST_ENVIRONMENT_KEY = "fc8eac422eba16e22ffd8c6f94b3f40a6e38162c"
PRODUCTION, TEST = 1, 2
_CENT = Decimal("0.01")


def amount(value: Decimal) -> str:
    """An amount as the CUFE writes it: truncated to two decimals, `.` separator."""
    return str(value.quantize(_CENT, rounding=ROUND_DOWN))


@dataclass(frozen=True)
class CufeFields:
    """What the CUFE hashes, in the document's own terms."""

    number: str  # NumFac, with prefix
    issue_date: dt.date  # FecFac
    issue_time: str  # HorFac, HH:MM:SS-05:00
    line_extension: Decimal  # ValFac (LineExtensionAmount)
    iva: Decimal  # ValImp1, code 01
    inc: Decimal  # ValImp2, code 04
    ica: Decimal  # ValImp3, code 03
    payable: Decimal  # ValTot (PayableAmount)
    issuer_nit: str  # NitOFE, without DV
    buyer_id: str  # NumAdq
    environment: int  # TipoAmbiente: 1 production, 2 test

    def composition(self, technical_key: str) -> str:
        return "".join(
            (
                self.number,
                self.issue_date.isoformat(),
                self.issue_time,
                amount(self.line_extension),
                "01",
                amount(self.iva),
                "04",
                amount(self.inc),
                "03",
                amount(self.ica),
                amount(self.payable),
                self.issuer_nit,
                self.buyer_id,
                technical_key,
                str(self.environment),
            )
        )

    def cufe(self, technical_key: str) -> str:
        return sha384_hex(self.composition(technical_key))


def sha384_hex(text: str) -> str:
    return hashlib.sha384(text.encode("utf-8")).hexdigest()


def well_formed(cufe: str) -> bool:
    """96 lowercase-insensitive hex characters."""
    return CUFE_PATTERN.match(cufe.lower()) is not None
