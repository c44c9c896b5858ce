"""`bmc` subcommands."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli import clients, commissions, events, invoices, mesh, ocr, products
from services.cli.cluster import Cluster, ClusterError, ServiceStatus
from services.kit.settings import get_settings
from services.kit.tokens import ROLE_NAMES, mint_token

app = typer.Typer(help="BMC Registry: invoice registration for the Bolsa Mercantil de Colombia.", no_args_is_help=True)
app.add_typer(products.app, name="products")
app.add_typer(invoices.app, name="invoices")
app.add_typer(invoices.audit, name="audit")
app.add_typer(commissions.app, name="commissions")
app.add_typer(clients.app, name="clients")
app.add_typer(events.app, name="events")
app.add_typer(mesh.app, name="mesh")
app.command("ocr")(ocr.ocr)
console = Console()


def status_table(statuses: list[ServiceStatus], title: str) -> Table:
    table = Table(title=title)
    for column in ("service", "gRPC name", "address", "pid", "health", "restarts", "log"):
        table.add_column(column)
    for s in statuses:
        colour = "green" if s.health == "SERVING" else "red"
        table.add_row(
            s.name, s.full_name, s.address, str(s.pid), f"[{colour}]{s.health}[/]", str(s.restarts), str(s.log)
        )
    return table


@app.command()
def up() -> None:
    """Start every service as its own process (and the embedded databases when
    BMC_DATABASE_URL / BMC_REDIS_URL are unset); Ctrl-C stops them all."""
    settings = get_settings()
    cluster = Cluster(settings)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with console.status("starting services..."):
            cluster.start()
        console.print(status_table(cluster.statuses(), "BMC Registry is up"))
        infra = cluster.infrastructure
        assert infra is not None
        console.print(f"PostgreSQL: {infra.database_url}\nRedis: {infra.redis_url}")
        console.print(f"TLS: {'mutual TLS (dev CA in ' + str(settings.pki_dir) + ')' if settings.tls else 'off'}")
        console.print("ready; press Ctrl-C to stop (crashed parts are restarted)", style="bold")
        while not stopping:
            for name in cluster.supervise():
                console.print(f"[yellow]{name} stopped unexpectedly; restarted[/] (restarts: {cluster.restarts[name]})")
            time.sleep(0.5)
    except ClusterError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        with console.status("stopping..."):
            cluster.stop()
    console.print("all services stopped")


@app.command()
def token(
    role: Annotated[list[str], typer.Option("--role", "-r", help=f"Role to grant: {', '.join(sorted(ROLE_NAMES))}.")],
    tenant: Annotated[str, typer.Option(help="Broker id (required with the broker role).")] = "",
    subject: Annotated[str, typer.Option(help="Token subject (client or user id).")] = "dev",
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1, max=7 * 24 * 3600)] = 3600,
) -> None:
    """Mint an access token with the dev signing key (use it as `authorization: Bearer <token>`)."""
    if "broker" in role and not tenant:
        raise typer.BadParameter("the broker role needs --tenant", param_hint="--tenant")
    try:
        print(mint_token(get_settings(), subject=subject, roles=role, tenant=tenant, ttl_seconds=ttl))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from exc


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the summary and certificates go.")] = Path("out"),
) -> None:
    """Start the platform and run the main job end to end, writing a summary to ./out/."""
    from services.cli.demo import run_demo

    if not run_demo(get_settings(), out, console):
        raise typer.Exit(1)
