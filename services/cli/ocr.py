"""`bmc ocr FILE...`: read invoices from PDFs and images, show what was read,
and optionally register the drafts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from bmc.common.v1 import party_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from bmc.ocr.v1 import ocr_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from bmc.product.v1 import product_service_pb2, product_service_pb2_grpc
from services.dian.nit import check_digit
from services.invoice.ocr_review import KEY_FIELDS
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings, get_settings
from services.kit.tokens import mint_token

console = Console()
UNARY_LIMIT = 3 * 1024 * 1024  # larger files are streamed
CHUNK = 512 * 1024
SOURCES = {v: ocr_pb2.FieldSource.Name(v).removeprefix("FIELD_SOURCE_") for v in ocr_pb2.FieldSource.values()}


Metadata = tuple[tuple[str, str], ...]


def extract(stub: ocr_service_pb2_grpc.OcrServiceStub, metadata: Metadata, path: Path) -> ocr_pb2.Extraction:
    content = path.read_bytes()
    if len(content) <= UNARY_LIMIT:
        request = ocr_service_pb2.ExtractInvoiceRequest(content=content, filename=path.name)
        extraction: ocr_pb2.Extraction = stub.ExtractInvoice(request, metadata=metadata, timeout=300)
        return extraction

    def parts() -> Iterator[ocr_service_pb2.StreamExtractInvoiceRequest]:
        header = ocr_service_pb2.UploadHeader(filename=path.name, size_bytes=len(content))
        yield ocr_service_pb2.StreamExtractInvoiceRequest(header=header)
        for start in range(0, len(content), CHUNK):
            yield ocr_service_pb2.StreamExtractInvoiceRequest(chunk=content[start : start + CHUNK])

    streamed: ocr_pb2.Extraction = stub.StreamExtractInvoice(parts(), metadata=metadata, timeout=300)
    return streamed


def extraction_table(extraction: ocr_pb2.Extraction) -> Table:
    seconds = extraction.duration.ToTimedelta().total_seconds()
    table = Table(title=f"{extraction.filename}: confidence {extraction.confidence:.0%}, {seconds:.1f} s")
    for column in ("field", "value", "confidence", "source"):
        table.add_column(column)
    for f in extraction.fields:
        colour = "green" if f.confidence >= 0.9 else "yellow" if f.confidence >= 0.7 else "red"
        table.add_row(f.field, f.value, f"[{colour}]{f.confidence:.0%}[/]", SOURCES[f.source])
    for line in extraction.draft.lines:
        table.add_row(
            f"line {line.line_number}",
            f"{line.description} · {line.quantity} {line.unit_code} · {line.line_extension_amount}",
            "",
            "",
        )
    for w in extraction.warnings:
        table.add_row("[yellow]warning[/]", f"{w.code}: {w.message}", "", "")
    return table


def choose_products(
    catalog: product_service_pb2_grpc.ProductServiceStub, metadata: Metadata, draft: invoice_pb2.Invoice
) -> list[str]:
    """Gives each line without a product the eligible catalog product whose
    name is most like the printed description; the lines left without one."""
    unmatched = []
    for line in draft.lines:
        if line.product_code:
            continue
        request = product_service_pb2.ListProductsRequest(
            name_query=line.description[:200], eligible_only=True, page_size=1
        )
        found = catalog.ListProducts(request, metadata=metadata, timeout=10).products
        if found:
            line.product_code = found[0].code
            console.print(f"line {line.line_number}: {line.description!r} → {found[0].code} ({found[0].display_name})")
        else:
            unmatched.append(f"line {line.line_number} ({line.description!r})")
    return unmatched


def _set_party(party: party_pb2.Party, number: str) -> None:
    party.id.number = number
    party.id.check_digit = str(check_digit(number)) if number.isdigit() else party.id.check_digit


def _set_total(totals: invoice_pb2.MonetaryTotal, value: str) -> None:
    totals.payable_amount = totals.tax_inclusive_amount = value


# Where a confirmed or corrected key field goes in the draft.
CORRECTIONS: dict[str, Callable[[invoice_pb2.Invoice, str], None]] = {
    "number": lambda draft, value: setattr(draft, "number", value),
    "cufe": lambda draft, value: setattr(draft, "cufe", value.lower()),
    "seller_nit": lambda draft, value: _set_party(draft.seller, value),
    "buyer_id": lambda draft, value: _set_party(draft.buyer, value),
    "total": lambda draft, value: _set_total(draft.totals, value),
}


def parse_confirmations(given: list[str]) -> dict[str, str | None]:
    """`--confirm FIELD` (as read) or `--confirm FIELD=VALUE` (corrected), by field."""
    confirmations: dict[str, str | None] = {}
    for item in given:
        name, has_value, value = item.partition("=")
        if name not in CORRECTIONS:
            raise typer.BadParameter(f"{name!r}: confirm one of {', '.join(CORRECTIONS)}", param_hint="--confirm")
        confirmations[name] = value.strip() if has_value else None
    return confirmations


Ask = Callable[[str, str], str | None]


def review(
    extraction: ocr_pb2.Extraction, confirmations: dict[str, str | None], ask: Ask | None
) -> tuple[invoice_pb2.Invoice, list[str]]:
    """The draft with a person's confirmations and corrections, and the key
    fields that still wait for one. `ask(field, as_read)` prompts a person:
    the value (as read, or corrected), or None to leave it unconfirmed."""
    draft = invoice_pb2.Invoice()
    draft.CopyFrom(extraction.draft)
    confirmed, waiting = [], []
    for name in dict.fromkeys([*extraction.fields_to_confirm, *confirmations]):
        as_read = KEY_FIELDS[name](draft)
        if name in confirmations:
            value: str | None = confirmations[name] or as_read
        else:
            value = ask(name, as_read) if ask else None
        if value is None:
            waiting.append(name)
            continue
        CORRECTIONS[name](draft, value)
        confirmed.append(name)
    draft.ocr_review.extraction = extraction.name
    draft.ocr_review.confirmed_fields.extend(confirmed)
    return draft, waiting


def prompt(field: str, as_read: str) -> str | None:
    """Asks at the terminal: Enter keeps the value read, text corrects it, `-` leaves it unconfirmed."""
    answer = typer.prompt(
        f"{field} was read by OCR as {as_read!r} and nothing checked it. Enter to confirm, the right value to "
        "correct it, - to skip",
        default="",
        show_default=False,
    ).strip()
    if answer == "-":
        return None
    return answer or as_read


def submit(
    registry: invoice_service_pb2_grpc.InvoiceServiceStub,
    catalog: product_service_pb2_grpc.ProductServiceStub,
    metadata: Metadata,
    extraction: ocr_pb2.Extraction,
    product: str,
    broker: str,
    confirmations: dict[str, str | None] | None = None,
    ask: Ask | None = None,
) -> invoice_pb2.Invoice | None:
    """Registers an extraction's draft (once: the extraction names the
    request), after a person confirmed what Tesseract read unchecked."""
    draft, waiting = review(extraction, confirmations or {}, ask)
    if waiting:
        console.print(
            f"[red]not registered[/]: read by OCR and not confirmed by a person: {', '.join(waiting)}; "
            f"check them against the document and pass --confirm FIELD (as read) or --confirm FIELD=VALUE"
        )
        return None
    if draft.ocr_review.confirmed_fields:
        console.print(f"confirmed by a person: {', '.join(draft.ocr_review.confirmed_fields)}")
    draft.broker = broker
    for line in draft.lines:
        line.product_code = product or line.product_code
    unmatched = choose_products(catalog, metadata, draft)
    if unmatched:
        console.print(f"[red]not registered[/]: no eligible catalog product for {', '.join(unmatched)}; use --product")
        return None
    request = invoice_service_pb2.RegisterInvoiceRequest(invoice=draft, request_id=extraction.name[-32:])
    try:
        registered: invoice_pb2.Invoice = registry.RegisterInvoice(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        console.print(f"[red]not registered[/]: {exc.code().name} {exc.details()}")
        return None
    console.print(f"[green]registered[/] {registered.registration_number} ({registered.name})")
    return registered


def read_files(
    settings: Settings,
    files: list[Path],
    submit_drafts: bool = False,
    product: str = "",
    broker: str = "",
    confirmations: dict[str, str | None] | None = None,
    ask: Ask | None = None,
) -> list[ocr_pb2.Extraction]:
    token = bearer(mint_token(settings, subject="bmc-cli", roles=["operator"]))
    found = []
    with (
        sync_channel(settings, "ocr") as channel,
        sync_channel(settings, "invoice") as invoices,
        sync_channel(settings, "product") as products,
    ):
        stub = ocr_service_pb2_grpc.OcrServiceStub(channel)
        registry = invoice_service_pb2_grpc.InvoiceServiceStub(invoices)
        catalog = product_service_pb2_grpc.ProductServiceStub(products)
        for path in files:
            extraction = extract(stub, token, path)
            found.append(extraction)
            console.print(extraction_table(extraction))
            if submit_drafts:
                submit(registry, catalog, token, extraction, product, broker, confirmations, ask)
    return found


def ocr(
    files: Annotated[list[Path], typer.Argument(help="PDF, PNG, JPEG or TIFF invoices.")],
    submit: Annotated[bool, typer.Option(help="Register each draft after reading it.")] = False,
    product: Annotated[
        str,
        typer.Option(help="Catalog code for every line (with --submit); default: the product named most alike."),
    ] = "",
    broker: Annotated[str, typer.Option(help="Broker the drafts are registered for.")] = "brokers/demo",
    confirm: Annotated[
        list[str] | None,
        typer.Option(
            help="With --submit: a key field Tesseract read that you checked against the document, as read "
            "(FIELD) or corrected (FIELD=VALUE); FIELD is number, cufe, seller_nit, buyer_id or total. "
            "Without it, a terminal asks; otherwise the draft is not registered."
        ),
    ] = None,
) -> None:
    """Read invoices from PDFs and images: fields, confidence, source, warnings."""
    confirmations = parse_confirmations(confirm or [])
    ask = prompt if sys.stdin.isatty() else None
    try:
        read_files(get_settings(), files, submit, product, broker, confirmations, ask)
    except grpc.RpcError as exc:
        console.print(f"[red]{exc.code().name}[/] {exc.details()}")
        raise typer.Exit(1) from exc
