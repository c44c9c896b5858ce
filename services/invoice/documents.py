"""Files of invoices, split into documents: one UBL XML (Invoice or
AttachedDocument), a ZIP of them, or a CSV with one row per invoice line.

ZIP archives are checked before they are expanded (entry count, declared and
actual sizes, compression ratio) so that a decompression bomb is refused,
not inflated. The invoice service runs `inspect`, `read_documents` and, for
the files of an archive a group at a time, `parse_parts` in an isolated
worker process (`services.kit.workers`) within a time budget: parsing never
runs on its event loop."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from bmc.invoice.v1 import invoice_pb2
from services.invoice.domain import NIT, InvoiceDocument, Line, Party, Tax, TaxScheme, Totals
from services.invoice.ubl import UblError, parse_document, safe_root

MAX_ENTRIES = 20_000
MAX_ENTRY_BYTES = 10 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024
# Invoices compress 5 to 20 times; a file that expands more than this is a
# bomb, not an invoice (only checked for entries above 1 MiB expanded).
MAX_RATIO = 100
RATIO_FROM_BYTES = 1024 * 1024
# Seconds a file may take to read: a base, plus per MiB of XML or CSV to parse.
BASE_SECONDS, SECONDS_PER_MIB = 10.0, 2.0
CSV_COLUMNS = (
    "number", "cufe", "environment", "issue_date", "issue_time", "currency", "seller_nit", "seller_dv",
    "seller_name", "buyer_id_type", "buyer_id", "buyer_dv", "buyer_name", "line_number", "product_code",
    "description", "quantity", "unit_code", "unit_price", "line_extension_amount", "iva_percent", "iva_amount",
    "payable_amount",
)  # fmt: skip


class DocumentError(ValueError):
    """The file as a whole cannot be read; `reason` says why, for machines."""

    def __init__(self, message: str, reason: str = "UNREADABLE_DOCUMENT") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[DocumentError], tuple[str, str]]:
        return type(self), (str(self), self.reason)


@dataclass(frozen=True)
class SourceDocument:
    """One invoice found in a file, or why it could not be read."""

    source: str  # ZIP entry name, `line N`, or the file name
    document: InvoiceDocument | None
    source_format: int
    error: UblError | None = None


def detect(content: bytes, requested: int) -> int:
    if requested:
        return requested
    if content[:4] == b"PK\x03\x04":
        return invoice_pb2.DOCUMENT_FORMAT_ZIP
    head = content[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return invoice_pb2.DOCUMENT_FORMAT_UBL_INVOICE
    if head[:64].lower().startswith(b"number,"):
        return invoice_pb2.DOCUMENT_FORMAT_CSV
    raise DocumentError("cannot tell the format: expected UBL XML, a ZIP of XML files, or a CSV with a header")


def split(content: bytes, requested: int, filename: str) -> Iterator[SourceDocument]:
    kind = detect(content, requested)
    if kind == invoice_pb2.DOCUMENT_FORMAT_ZIP:
        yield from _zip(content)
    elif kind == invoice_pb2.DOCUMENT_FORMAT_CSV:
        yield from _csv(content)
    else:
        yield _xml(content, filename or "document.xml")


def _xml(content: bytes, source: str) -> SourceDocument:
    try:
        document = parse_document(content)
    except UblError as exc:
        return SourceDocument(source, None, invoice_pb2.SOURCE_FORMAT_UBL_INVOICE, exc)
    wrapped = b"AttachedDocument" in content[:4096]
    kind = invoice_pb2.SOURCE_FORMAT_ATTACHED_DOCUMENT if wrapped else invoice_pb2.SOURCE_FORMAT_UBL_INVOICE
    return SourceDocument(source, document, kind)


def _archive(content: bytes) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The archive and its files, once its directory passes the limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise DocumentError(f"not a readable ZIP archive: {exc}") from exc
    entries = [e for e in archive.infolist() if not e.is_dir()]
    if len(entries) > MAX_ENTRIES:
        raise DocumentError(f"the archive holds {len(entries)} files; at most {MAX_ENTRIES} are accepted")
    if sum(e.file_size for e in entries) > MAX_TOTAL_BYTES:
        raise DocumentError("the archive expands beyond 512 MiB; split it")
    for entry in entries:
        if entry.file_size > RATIO_FROM_BYTES and entry.file_size > MAX_RATIO * max(entry.compress_size, 1):
            raise DocumentError(
                f"{entry.filename[:100]!r} expands {entry.file_size // max(entry.compress_size, 1):,} times "
                f"(at most {MAX_RATIO}): refused as a decompression bomb",
                "DECOMPRESSION_BOMB",
            )
    return archive, entries


def inspect(content: bytes, requested: int) -> None:
    """Refuses, with DocumentError or UblError, a file that is not
    acceptable as a whole: a ZIP's directory beyond limits (a bomb), an XML
    document that does not parse safely."""
    kind = detect(content, requested)
    if kind == invoice_pb2.DOCUMENT_FORMAT_ZIP:
        _archive(content)
    elif kind in (invoice_pb2.DOCUMENT_FORMAT_UBL_INVOICE, invoice_pb2.DOCUMENT_FORMAT_ATTACHED_DOCUMENT):
        safe_root(content)


def reading_budget(size: int) -> float:
    """Seconds reading `size` bytes of XML or CSV may take."""
    return BASE_SECONDS + SECONDS_PER_MIB * size / 2**20


def read_documents(content: bytes, requested: int, filename: str) -> list[SourceDocument]:
    """Every document of the file (for a worker process: the list crosses back pickled)."""
    return list(split(content, requested, filename))


# An XML file of an archive: its name and bytes, still to be parsed.
Part = tuple[str, bytes]


def _xml_entries(content: bytes) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    archive, entries = _archive(content)
    return archive, [e for e in entries if e.filename.lower().endswith(".xml")]


def zip_document_count(content: bytes) -> int:
    return len(_xml_entries(content)[1])


def zip_parts(content: bytes) -> Iterator[Part | SourceDocument]:
    """The archive's XML files in order, read but not parsed (or, for one
    too large, the refusal): parsing is the costly part, done elsewhere."""
    archive, entries = _xml_entries(content)
    for entry in entries:
        if entry.file_size > MAX_ENTRY_BYTES:
            yield SourceDocument(entry.filename, None, 0, UblError("", "TOO_LARGE", "entry larger than 10 MiB"))
            continue
        with archive.open(entry) as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)  # never trust the declared size alone
        if len(data) > MAX_ENTRY_BYTES:
            yield SourceDocument(entry.filename, None, 0, UblError("", "TOO_LARGE", "entry larger than 10 MiB"))
            continue
        yield entry.filename, data


def parse_parts(parts: list[Part | SourceDocument]) -> list[SourceDocument]:
    """Each part parsed, in order (for a worker process)."""
    return [part if isinstance(part, SourceDocument) else _xml(part[1], part[0]) for part in parts]


def _zip(content: bytes) -> Iterator[SourceDocument]:
    for part in zip_parts(content):
        yield part if isinstance(part, SourceDocument) else _xml(part[1], part[0])


def _decimal(value: str, column: str, line: int) -> Decimal:
    try:
        return Decimal(value.strip() or "0")
    except InvalidOperation as exc:
        raise UblError(column, "BAD_AMOUNT", f"line {line}: {column} is not a number: {value!r}") from exc


def _csv(content: bytes) -> Iterator[SourceDocument]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"the CSV is not UTF-8 (byte {exc.start})") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise DocumentError(f"the CSV header lacks: {', '.join(sorted(missing))}")
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for row in reader:
        groups.setdefault(row["number"].strip(), []).append((reader.line_num, row))
    for number, rows in groups.items():
        first_line = rows[0][0]
        try:
            yield SourceDocument(f"line {first_line}", _csv_document(number, rows), invoice_pb2.SOURCE_FORMAT_CSV)
        except UblError as exc:
            yield SourceDocument(f"line {first_line}", None, invoice_pb2.SOURCE_FORMAT_CSV, exc)


def _csv_document(number: str, rows: list[tuple[int, dict[str, str]]]) -> InvoiceDocument:
    line_no, head = rows[0]
    lines: list[Line] = []
    taxes: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for line_no, row in rows:
        extension = _decimal(row["line_extension_amount"], "line_extension_amount", line_no)
        percent = _decimal(row["iva_percent"], "iva_percent", line_no)
        iva = _decimal(row["iva_amount"], "iva_amount", line_no)
        tax = Tax(TaxScheme.IVA, percent, extension, iva)
        lines.append(
            Line(
                int(row["line_number"] or len(lines) + 1),
                row["product_code"].strip(),
                row["description"],
                _decimal(row["quantity"], "quantity", line_no),
                row["unit_code"].strip(),
                _decimal(row["unit_price"], "unit_price", line_no),
                extension,
                (tax,),
            )
        )
        base, amount = taxes.get(percent, (Decimal(0), Decimal(0)))
        taxes[percent] = (base + extension, amount + iva)
    subtotal = sum((line.line_extension for line in lines), Decimal(0))
    doc_taxes = tuple(Tax(TaxScheme.IVA, p, base, amount) for p, (base, amount) in taxes.items())
    try:
        issue_date = dt.date.fromisoformat(head["issue_date"].strip())
    except ValueError as exc:
        raise UblError("issue_date", "BAD_DATE", f"line {rows[0][0]}: issue_date must be YYYY-MM-DD") from exc
    buyer_type = int(head["buyer_id_type"] or NIT)
    return InvoiceDocument(
        number=number,
        cufe=head["cufe"].strip().lower(),
        environment=int(head["environment"] or 1),
        issue_date=issue_date,
        issue_time=head["issue_time"].strip(),
        currency=head["currency"].strip() or "COP",
        seller=Party(NIT, head["seller_nit"].strip(), head["seller_dv"].strip(), head["seller_name"].strip()),
        buyer=Party(buyer_type, head["buyer_id"].strip(), head["buyer_dv"].strip(), head["buyer_name"].strip()),
        lines=tuple(lines),
        taxes=doc_taxes,
        totals=Totals(
            line_extension=subtotal,
            payable=_decimal(head["payable_amount"], "payable_amount", rows[0][0]),
            tax_exclusive=subtotal,
        ),
    )
