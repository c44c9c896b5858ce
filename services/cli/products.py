"""`bmc products ...`: synthesize, import and look up catalog products."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.kit.clients import bearer, sync_channel
from services.kit.settings import BUCKET_SCHEMES, Settings, get_settings
from services.kit.tokens import mint_token
from services.product.synth import write_shards

app = typer.Typer(help="The product catalog.", no_args_is_help=True)
console = Console()
FORMATS = {
    "csv": product_pb2.IMPORT_FORMAT_CSV,
    "ndjson": product_pb2.IMPORT_FORMAT_NDJSON,
    "parquet": product_pb2.IMPORT_FORMAT_PARQUET,
}


def _stub(
    settings: Settings,
) -> tuple[product_service_pb2_grpc.ProductServiceStub, tuple[tuple[str, str], ...], grpc.Channel]:
    channel = sync_channel(settings, "product")
    token = mint_token(settings, subject="bmc-cli", roles=["operator"])
    return product_service_pb2_grpc.ProductServiceStub(channel), bearer(token), channel


@app.command()
def synth(
    count: Annotated[int, typer.Option(min=1, help="How many products.")],
    out: Annotated[Path, typer.Option(help="Directory for the shards.")] = Path("out/catalog"),
    format: Annotated[str, typer.Option("--format", help="csv, ndjson or parquet.")] = "csv",
    shards: Annotated[int, typer.Option(min=1, help="Number of files.")] = 1,
    gzip: Annotated[bool, typer.Option("--gzip", help="Compress CSV/NDJSON shards.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same catalog).")] = 7,
) -> None:
    """Write a synthetic catalog shaped like a Google Cloud export."""
    if format not in FORMATS:
        raise typer.BadParameter("use csv, ndjson or parquet", param_hint="--format")
    started = time.monotonic()
    with console.status(f"writing {count:,} products..."):
        paths = write_shards(out, count, format, shards, gzip, seed)
    size = sum(p.stat().st_size for p in paths)
    console.print(
        f"wrote {count:,} products in {len(paths)} file(s), {size / 1e6:,.1f} MB, {time.monotonic() - started:.1f}s"
    )
    for path in paths[:5]:
        console.print(f"  {path}")


def stage_for_import(settings: Settings, files: list[str]) -> list[str]:
    """URIs the product service may read for these files: a bucket URI
    (gs://, s3://) or a file already in an import directory as it is; any
    other local file linked (or, across file systems, copied) into the inbox
    first, since the service reads nowhere else. A file is staged under a
    name of its own identity, so a retry with the same request id names the
    same URIs."""
    inbox = settings.import_directories[0]
    roots = [root.resolve() for root in settings.import_directories]
    uris = []
    for file in files:
        if file.startswith(BUCKET_SCHEMES):
            uris.append(file)
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in roots):
            uris.append(str(path))
            continue
        status = path.stat()
        identity = hashlib.sha256(f"{path}:{status.st_size}:{status.st_mtime_ns}".encode()).hexdigest()[:16]
        staged = inbox / "staged" / identity / path.name
        if not staged.exists():
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
        uris.append(str(staged))
    return uris


def wait_for_import(
    stub: product_service_pb2_grpc.ProductServiceStub,
    metadata: tuple[tuple[str, str], ...],
    operation: operations_pb2.Operation,
) -> operations_pb2.Operation:
    """Polls the operation, drawing a progress bar, until it is done."""
    meta = product_pb2.ImportProductsMetadata()
    operation.metadata.Unpack(meta)
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("importing", total=meta.bytes_total or None, rows="0")
        while not operation.done:
            time.sleep(0.5)
            operation = stub.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name), metadata=metadata, timeout=10
            )
            operation.metadata.Unpack(meta)
            progress.update(
                task,
                completed=meta.bytes_read,
                description=meta.progress.stage or "importing",
                rows=f"{meta.progress.done:,}",
            )
        progress.update(task, completed=meta.bytes_total)
    return operation


def import_summary(operation: operations_pb2.Operation, seconds: float) -> Table:
    result = product_pb2.ImportProductsResponse()
    operation.response.Unpack(result)
    table = Table(title=f"import {operation.name}")
    for column in ("rows read", "inserted", "updated", "unchanged", "rejected", "rows/s"):
        table.add_column(column, justify="right")
    rate = result.rows_read / seconds if seconds else 0
    table.add_row(
        *(f"{v:,}" for v in (result.rows_read, result.inserted, result.updated, result.unchanged, result.rejected)),
        f"{rate:,.0f}",
    )
    return table


@app.command("import")
def import_files(
    files: Annotated[
        list[str],
        typer.Argument(
            help="CSV, NDJSON (.gz too) or Parquet files, or gs:// and s3:// URIs (globs over shards in quotes)."
        ),
    ],
    format: Annotated[
        str, typer.Option("--format", help="csv, ndjson or parquet; guessed from names when omitted.")
    ] = "",
    request_id: Annotated[str, typer.Option(help="Idempotency key; a retry with it returns the same import.")] = "",
) -> None:
    """Bulk-import catalog files through the running product service, with progress."""
    if format and format not in FORMATS:
        raise typer.BadParameter("use csv, ndjson or parquet", param_hint="--format")
    settings = get_settings()
    stub, metadata, channel = _stub(settings)
    request = product_service_pb2.ImportProductsRequest(
        uris=stage_for_import(settings, files),
        format=FORMATS[format] if format else product_pb2.IMPORT_FORMAT_UNSPECIFIED,
        request_id=request_id or uuid.uuid4().hex,
    )
    started = time.monotonic()
    with channel:
        try:
            operation = stub.ImportProducts(request, metadata=metadata, timeout=30)
            operation = wait_for_import(stub, metadata, operation)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/]: {exc.details()}")
            raise typer.Exit(1) from exc
    if operation.HasField("error"):
        console.print(f"[red]import failed[/]: {operation.error.message}")
        raise typer.Exit(1)
    console.print(import_summary(operation, time.monotonic() - started))
    result = product_pb2.ImportProductsResponse()
    operation.response.Unpack(result)
    if result.reject_report_uri:
        console.print(f"rejected rows are listed in {result.reject_report_uri}")


@app.command()
def get(codes: Annotated[list[str], typer.Argument(help="Product codes.")]) -> None:
    """Look products up (through the cache) and print them."""
    stub, metadata, channel = _stub(get_settings())
    with channel:
        response = stub.BatchGetProducts(
            product_service_pb2.BatchGetProductsRequest(names=[f"products/{c}" for c in codes]),
            metadata=metadata,
            timeout=10,
        )
    table = Table()
    for column in ("code", "name", "category", "processing", "eligible", "state"):
        table.add_column(column)
    for p in response.products:
        table.add_row(
            p.code, p.display_name, product_pb2.Category.Name(p.category).removeprefix("CATEGORY_"),
            product_pb2.ProcessingLevel.Name(p.processing_level).removeprefix("PROCESSING_LEVEL_"),
            "yes" if p.eligible else "no", product_pb2.ProductState.Name(p.state).removeprefix("PRODUCT_STATE_"),
        )  # fmt: skip
    console.print(table)
    for name in response.missing:
        console.print(f"[yellow]not in the catalog:[/] {name}")
