"""From a rendered page to the document BMC hands out: XMP metadata and
document permissions (pikepdf), then a PAdES signature (pyHanko) that
certifies the document, so any later change shows as a broken seal."""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers

from services.certificate.domain import ISSUER_NAME


@dataclass(frozen=True)
class SigningKey:
    """BMC's signing certificate and key (PEM files) and the chain above it."""

    certificate: Path
    key: Path
    chain: tuple[Path, ...] = ()


def seal(pdf: bytes, number: str, subject: str) -> tuple[bytes, str]:
    """The PDF with XMP metadata, printable but not modifiable (AES-128, no
    user password), and the owner password that was used (needed to sign).

    The permissions are what a reader enforces; what proves the file
    unaltered is the certification signature. AES-128 (R4) instead of
    AES-256 (R6) saves ~18 ms per file, R6's slow key derivation buys
    nothing for a document anyone may open."""
    owner = secrets.token_urlsafe(24)
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf)) as document:
        with document.open_metadata(set_pikepdf_as_editor=False) as xmp:
            xmp["dc:title"] = f"Certificado de registro {number}"
            xmp["dc:description"] = subject
            xmp["dc:creator"] = [ISSUER_NAME]
            xmp["pdf:Producer"] = "BMC Registry"
            xmp["xmp:CreatorTool"] = "BMC Registry certificate service"
            xmp["pdf:Keywords"] = f"BMC; certificado; {number}"
        document.save(
            out,
            encryption=pikepdf.Encryption(
                owner=owner,
                user="",
                R=4,
                allow=pikepdf.Permissions(
                    accessibility=True,
                    extract=True,
                    print_lowres=True,
                    print_highres=True,
                    modify_annotation=False,
                    modify_assembly=False,
                    modify_form=False,
                    modify_other=False,
                ),
            ),
        )
    return out.getvalue(), owner


class Sealer:
    """Seals and signs certificates with one signing key (loaded once)."""

    def __init__(self, key: SigningKey) -> None:
        self._signer = signers.SimpleSigner.load(
            str(key.key), str(key.certificate), ca_chain_files=[str(p) for p in key.chain]
        )
        if self._signer is None:
            raise ValueError(f"cannot load the signing key {key.key} / {key.certificate}")

    def sign(self, pdf: bytes, number: str, subject: str) -> bytes:
        sealed, owner = seal(pdf, number, subject)
        writer = IncrementalPdfFileWriter(io.BytesIO(sealed))
        writer.encrypt(owner)
        signed = signers.sign_pdf(
            writer,
            signers.PdfSignatureMetadata(
                field_name="FirmaBMC",
                reason=f"Certificado de registro {number}",
                location="Bogotá D.C., Colombia",
                name=ISSUER_NAME,
                subfilter=fields.SigSeedSubFilter.PADES,
                certify=True,
                docmdp_permissions=fields.MDPPerm.NO_CHANGES,
            ),
            signer=self._signer,
            # A fixed room for the signature spares pyHanko a trial signature to measure it.
            bytes_reserved=16384,
        )
        output: bytes = signed.getvalue()
        return output
