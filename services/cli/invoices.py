"""`bmc invoices ...`, `bmc audit verify` and `bmc audit reconcile`: register invoice files, check the
event chain, reconcile registrations with their commissions and certificates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2, invoice_service_pb2_grpc
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings, get_settings
from services.kit.tokens import mint_token

app = typer.Typer(help="Invoice registration.", no_args_is_help=True)
audit = typer.Typer(help="Audit the tamper-evident event store.", no_args_is_help=True)
console = Console()


def _stub(
    settings: Settings, role: str = "operator"
) -> tuple[invoice_service_pb2_grpc.InvoiceServiceStub, tuple[tuple[str, str], ...], grpc.Channel]:
    channel = sync_channel(settings, "invoice")
    token = mint_token(settings, subject="bmc-cli", roles=[role])
    return invoice_service_pb2_grpc.InvoiceServiceStub(channel), bearer(token), channel


def import_file(
    stub: invoice_service_pb2_grpc.InvoiceServiceStub,
    metadata: tuple[tuple[str, str], ...],
    content: bytes,
    filename: str,
    broker: str,
) -> invoice_pb2.ImportInvoicesResponse:
    """Uploads one file, follows the import with a progress bar, returns its report."""
    operation = stub.ImportInvoices(
        invoice_service_pb2.ImportInvoicesRequest(content=content, filename=filename, broker=broker),
        metadata=metadata,
        timeout=60,
    )
    meta = invoice_pb2.ImportInvoicesMetadata()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task(filename, total=None)
        while not operation.done:
            time.sleep(0.3)
            operation = stub.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name), metadata=metadata, timeout=10
            )
            operation.metadata.Unpack(meta)
            progress.update(task, completed=meta.progress.done)
    if operation.HasField("error"):
        raise typer.BadParameter(f"{filename}: {operation.error.message}")
    report = invoice_pb2.ImportInvoicesResponse()
    operation.response.Unpack(report)
    return report


def report_table(filename: str, report: invoice_pb2.ImportInvoicesResponse, only_rejected: bool = False) -> Table:
    table = Table(title=f"{filename}: {report.registered} registered, {report.rejected} rejected")
    for column in ("source", "invoice number", "result", "field", "reason"):
        table.add_column(column)
    for d in report.documents:
        if d.invoice and not only_rejected:
            table.add_row(d.source, d.number, f"[green]{d.invoice}[/]", "", "")
        for issue in d.issues:
            table.add_row(d.source, d.number, "[red]rejected[/]", issue.field, f"{issue.reason}: {issue.description}")
    return table


@app.command()
def register(
    files: Annotated[
        list[Path], typer.Argument(help="UBL XML (Invoice or AttachedDocument), ZIP of XML, or CSV files.")
    ],
    broker: Annotated[
        str, typer.Option(help="Broker the invoices are registered for (brokers/<id>).")
    ] = "brokers/demo",
) -> None:
    """Register the invoices of each file, with progress and a report of accepted and rejected ones."""
    stub, metadata, channel = _stub(get_settings())
    failed = False
    with channel:
        for path in files:
            try:
                report = import_file(stub, metadata, path.read_bytes(), path.name, broker)
            except grpc.RpcError as exc:
                console.print(f"[red]{path.name}: {exc.code().name}[/] {exc.details()}")
                failed = True
                continue
            console.print(report_table(path.name, report))
            failed |= report.rejected > 0
    if failed:
        raise typer.Exit(1)


@audit.command()
def verify(from_position: Annotated[int, typer.Option(help="First event position to check.")] = 1) -> None:
    """Re-walk the event hash chain and report the first broken link."""
    stub, metadata, channel = _stub(get_settings(), role="auditor")
    with channel:
        result = stub.VerifyEventChain(
            invoice_service_pb2.VerifyEventChainRequest(from_position=from_position), metadata=metadata, timeout=600
        )
    if result.intact:
        console.print(f"[green]intact[/]: {result.events_checked:,} events re-hashed; head {result.head_hash}")
        return
    console.print(f"[red]BROKEN[/] at position {result.first_broken_position}: {result.detail}")
    raise typer.Exit(2)


@audit.command()
def reconcile(
    older_than: Annotated[int, typer.Option(help="Only registrations older than this many seconds.")] = 600,
    limit: Annotated[int, typer.Option(help="At most this many registrations, oldest first.")] = 1000,
    check: Annotated[bool, typer.Option("--check", help="Report only; repair nothing.")] = False,
) -> None:
    """Find registrations not certified in time, repair them from the other services, name the rest."""
    stub, metadata, channel = _stub(get_settings())
    with channel:
        result = stub.ReconcileInvoices(
            invoice_service_pb2.ReconcileInvoicesRequest(
                older_than_seconds=older_than, limit=limit, validate_only=check
            ),
            metadata=metadata,
            timeout=600,
        )
    verb = "to record" if check else "recorded"
    console.print(
        f"{result.behind:,} behind: {result.steps_recorded:,} steps {verb}, {result.redriven:,} re-driven to the "
        f"commission service, {result.certificates_requested:,} certificates requested, "
        f"{len(result.unresolved):,} unresolved"
    )
    if result.unresolved:
        table = Table("invoice", "reason", "detail")
        for item in result.unresolved:
            table.add_row(item.invoice, item.reason, item.detail)
        console.print(table)
        raise typer.Exit(1)
