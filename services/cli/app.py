"""`bmc` subcommands."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from services.cli import clients, commissions, events, invoices, mesh, ocr, products
from services.cli import status as status_view
from services.cli.cluster import Cluster, ClusterError, ServiceStatus
from services.cli.observe import ObserverError, Prometheus
from services.kit.settings import Settings, get_settings
from services.kit.tokens import ROLE_NAMES, mint_token
from services.mesh.access import edge_grpc_target, edge_url

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


NO_MESH = typer.Option(
    "--no-mesh",
    help="Run without Envoy (services on their own ports, calling each other directly), for debugging one; "
    "other bmc commands then need BMC_MESH=0 too.",
)


def chosen_settings(no_mesh: bool) -> Settings:
    settings = get_settings()
    return Settings(**{**settings.model_dump(), "mesh": False}) if no_mesh else settings


def status_table(statuses: list[ServiceStatus], title: str) -> Table:
    table = Table(title=title)
    meshed = any(s.sidecar for s in statuses)
    columns = ("service", "gRPC name", "address", *(("sidecar · identity",) if meshed else ()), "pid", "health")
    for column in (*columns, "restarts"):
        table.add_column(column)
    for s in statuses:
        colour = "green" if s.health == "SERVING" else "red"
        sidecar = (s.sidecar,) if meshed else ()
        health = f"[{colour}]{s.health}[/]"
        table.add_row(s.name, s.full_name, s.address, *sidecar, str(s.pid), health, str(s.restarts))
    return table


def transport(settings: Settings) -> str:
    if settings.mesh:
        return (
            f"mesh: every service behind its Envoy sidecar (mesh/mesh.toml); come in through the edge, "
            f"REST {edge_url(settings)}, gRPC {edge_grpc_target(settings)} "
            f"(`bmc mesh operator` prints grpcurl's certificate flags)"
        )
    if settings.tls:
        return f"no mesh; mutual TLS by the services (dev CA in {settings.pki_dir})"
    return "no mesh, no TLS (debugging)"


@app.command()
def up(
    no_mesh: Annotated[bool, NO_MESH] = False,
    observe: Annotated[
        bool,
        typer.Option(
            "--observe", help="Also start Prometheus (Debian's), scraping every process and sidecar, SLO rules loaded."
        ),
    ] = False,
) -> None:
    """Start every service as its own process, each replica behind its Envoy
    sidecar, the REST gateway and the edge (and the embedded databases when
    BMC_DATABASE_URL / BMC_REDIS_URL are unset); Ctrl-C stops them all."""
    settings = chosen_settings(no_mesh)
    cluster = Cluster(settings)
    observer: Prometheus | None = None
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
        console.print(f"logs: {cluster.log_dir}")
        infra = cluster.infrastructure
        assert infra is not None
        console.print(f"PostgreSQL: {infra.database_url}\nRedis: {infra.redis_url}")
        console.print(transport(settings))
        if observe:
            observer = Prometheus(cluster.settings, cluster.scrape_targets())
            with console.status("starting Prometheus..."):
                observer.start()
            console.print(f"Prometheus: {observer.url} (alerts: {observer.url}/alerts; data in {observer.directory})")
        console.print("ready; press Ctrl-C to stop (crashed parts are restarted)", style="bold")
        while not stopping:
            for name in cluster.supervise():
                console.print(f"[yellow]{name} stopped unexpectedly; restarted[/] (restarts: {cluster.restarts[name]})")
            time.sleep(0.5)
    except (ClusterError, ObserverError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        with console.status("stopping..."):
            if observer is not None:
                observer.stop()
            cluster.stop()
    console.print("all services stopped")


@app.command()
def status(
    prometheus: Annotated[
        str, typer.Option(help="Prometheus to read (default: the one `bmc up --observe` started).")
    ] = "",
    watch: Annotated[bool, typer.Option("--watch", help="Redraw every 5 s until Ctrl-C.")] = False,
) -> None:
    """The platform as Prometheus sees it: each process's health, rate, server errors and p99, each consumer
    group's lag, the outboxes, dead letters and the alerts firing, with the last ten minutes as sparklines."""
    observer = Prometheus(get_settings(), {}, prometheus)
    try:
        if not watch:
            console.print(status_view.render(status_view.take(observer)))
            return
        with Live(status_view.render(status_view.take(observer)), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(5)
                live.update(status_view.render(status_view.take(observer)))
    except OSError as exc:
        console.print(f"[red]error:[/] no Prometheus at {observer.url} ({exc}); start one with `bmc up --observe`")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        return


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
    no_mesh: Annotated[bool, NO_MESH] = False,
) -> None:
    """Start the platform and run the main job end to end, writing a summary to ./out/."""
    from services.cli.demo import run_demo

    if not run_demo(chosen_settings(no_mesh), out, console):
        raise typer.Exit(1)
