"""`bmc commissions ...`: quote, settle a period (with progress) and export it, close a period."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from bmc.commission.v1 import commission_pb2, commission_service_pb2, commission_service_pb2_grpc
from services.dian import calendar
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings, get_settings
from services.kit.tokens import mint_token

app = typer.Typer(help="BMC's commission: quotes, settlements, periods.", no_args_is_help=True)
console = Console()
Stub = commission_service_pb2_grpc.CommissionServiceStub
Metadata = tuple[tuple[str, str], ...]


def _stub(settings: Settings, role: str = "operator") -> tuple[Stub, Metadata, grpc.Channel]:
    channel = sync_channel(settings, "commission")
    return Stub(channel), bearer(mint_token(settings, subject="bmc-cli", roles=[role])), channel


def ensure_uvt(settings: Settings, year: int) -> str:
    """Records a provisional UVT for `year` when DIAN's is not recorded yet
    (the example tariff bounds commissions in UVT, so without it no
    commission of that year can be computed): the latest recorded value,
    labelled as provisional. For demos and tests on a development platform
    that run in a year the shipped reference data does not reach; a real
    deployment records DIAN's resolution with `CreateUvtValue`. Returns what
    was recorded, or "" when the year had its value."""
    stub, metadata, channel = _stub(settings, "admin")
    with channel:
        known = stub.ListUvtValues(commission_service_pb2.ListUvtValuesRequest(), metadata=metadata, timeout=10)
        if any(v.name == f"uvtValues/{year}" for v in known.uvt_values):
            return ""
        latest = max(known.uvt_values, key=lambda v: v.name)
        source = (
            f"provisional: {latest.name.removeprefix('uvtValues/')}'s value until DIAN's {year} resolution is recorded"
        )
        stub.CreateUvtValue(
            commission_service_pb2.CreateUvtValueRequest(
                year=year, uvt_value=commission_pb2.UvtValue(value=latest.value, source=source)
            ),
            metadata=metadata,
            timeout=10,
        )
    return f"UVT {year} = {latest.value} ({source})"


def settle(stub: Stub, metadata: Metadata, period: str, broker: str = "") -> commission_pb2.Settlement:
    """Runs the settlement as an operation, following its stages with a progress bar."""
    operation = stub.RunSettlement(
        commission_service_pb2.RunSettlementRequest(period=period, broker=broker), metadata=metadata, timeout=30
    )
    meta = commission_pb2.RunSettlementMetadata()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"), console=console
    ) as bar:
        task = bar.add_task(f"settlement {period} {broker or 'all brokers'}", total=3, stage="queued")
        while not operation.done:
            time.sleep(0.2)
            operation = stub.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name), metadata=metadata, timeout=10
            )
            operation.metadata.Unpack(meta)
            bar.update(task, completed=meta.progress.done, stage=meta.progress.stage)
        bar.update(task, completed=3, stage="done")
    if operation.HasField("error"):
        raise typer.BadParameter(f"settlement failed: {operation.error.message}")
    settlement = commission_pb2.Settlement()
    operation.response.Unpack(settlement)
    return settlement


def settlement_table(s: commission_pb2.Settlement, top: int = 10) -> Table:
    state = commission_pb2.SettlementState.Name(s.state).removeprefix("SETTLEMENT_STATE_")
    table = Table(title=f"{s.name} ({state}) · {', '.join(s.tariff_schedules) or 'no tariff used'}")
    for column in ("section", "key", "invoices", "base", "commission", "IVA", "total"):
        table.add_column(column, justify="right" if column not in ("section", "key") else "left")
    sections = [("broker", line) for line in s.by_broker[:top]] + [("category", line) for line in s.by_category]
    sections += [("", s.reversals), ("", s.adjustments), ("", s.total)]
    for section, line in sections:
        table.add_row(
            section, line.key, f"{line.invoice_count:,}", line.base, line.commission, line.vat, f"[bold]{line.total}[/]"
        )
    table.caption = f"content hash {s.content_hash[:16]}…; {len(s.by_buyer):,} buyers"
    return table


@app.command("settle")
def settle_command(
    period: Annotated[str, typer.Option(help="The month, YYYY-MM.")] = f"{calendar.today():%Y-%m}",
    broker: Annotated[str, typer.Option(help="One broker (brokers/<id>); all brokers when omitted.")] = "",
    out: Annotated[Path | None, typer.Option(help="Write the export here.")] = None,
    format: Annotated[str, typer.Option(help="Export format: csv (one row per entry) or json.")] = "csv",
) -> None:
    """Settle a period: totals by broker, buyer and category, reversals and adjustments."""
    stub, metadata, channel = _stub(get_settings())
    with channel:
        try:
            settlement = settle(stub, metadata, period, broker)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/] {exc.details()}")
            raise typer.Exit(1) from exc
        console.print(settlement_table(settlement))
        if out is not None:
            kind = (
                commission_service_pb2.EXPORT_FORMAT_JSON
                if format == "json"
                else commission_service_pb2.EXPORT_FORMAT_CSV
            )
            body = stub.ExportSettlement(
                commission_service_pb2.ExportSettlementRequest(name=settlement.name, format=kind),
                metadata=metadata,
                timeout=300,
            )
            out.write_bytes(body.data)
            console.print(f"exported to {out} ({len(body.data):,} bytes, {body.content_type})")


@app.command()
def quote(
    amount: Annotated[str, typer.Argument(help="Operation value in pesos, before taxes.")],
    product: Annotated[str, typer.Option(help="Catalog code of the product.")] = "",
    category: Annotated[str, typer.Option(help="Category name when there is no product (CATEGORY_LIVESTOCK).")] = "",
    date: Annotated[str, typer.Option(help="Date whose tariff applies, YYYY-MM-DD; today when omitted.")] = "",
) -> None:
    """Quote the commission of an operation and show the arithmetic."""
    request = commission_service_pb2.QuoteCommissionRequest(
        lines=[commission_pb2.QuoteLine(product_code=product, product_category=category, amount=amount)]
    )
    if date:
        day = dt.date.fromisoformat(date)
        request.date.year, request.date.month, request.date.day = day.year, day.month, day.day
    stub, metadata, channel = _stub(get_settings())
    with channel:
        try:
            response = stub.QuoteCommission(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/] {exc.details()}")
            raise typer.Exit(1) from exc
    b = response.breakdown
    for line in b.explanation:
        console.print(f"  {line}")
    console.print(
        f"[bold]commission {b.commission} + IVA {b.vat} = {b.total} COP[/] ({b.tariff_schedule}, rule {b.rule})"
    )
    if response.HasField("withholding"):
        w = response.withholding
        console.print(f"withholding avoided (estimate): {w.amount} COP — {w.rule}, threshold {w.threshold}")


@app.command()
def close(period: Annotated[str, typer.Option(help="The month to close, YYYY-MM.")]) -> None:
    """Close a period: its settlements become immutable; later corrections go to the next period."""
    stub, metadata, channel = _stub(get_settings(), role="admin")
    with channel:
        try:
            response = stub.ClosePeriod(
                commission_service_pb2.ClosePeriodRequest(period=period), metadata=metadata, timeout=600
            )
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/] {exc.details()}")
            raise typer.Exit(1) from exc
    console.print(f"closed {response.period}: {', '.join(response.settlements)}")
