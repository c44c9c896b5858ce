"""`bmc clients`: OAuth2 clients of the gateway's `/oauth/token` (dev and
on-premise issuer). Secrets are shown once and stored only as scrypt hashes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.gateway.oauth import ClientError, ClientRegistry
from services.kit.settings import get_settings
from services.kit.tokens import ROLE_NAMES

app = typer.Typer(help="OAuth2 clients allowed to get tokens from the gateway (client credentials).")
console = Console()


def registry() -> ClientRegistry:
    return ClientRegistry(get_settings().auth_dir / "clients.json")


@app.command()
def add(
    client_id: Annotated[str, typer.Argument(help="Client id, e.g. erp-acme.")],
    role: Annotated[list[str], typer.Option("--role", "-r", help=f"Role: {', '.join(sorted(ROLE_NAMES))}.")],
    tenant: Annotated[str, typer.Option(help="Broker id (required with the broker role).")] = "",
    description: Annotated[str, typer.Option(help="Who uses it.")] = "",
) -> None:
    """Register a client and print its secret (shown only this once)."""
    try:
        secret = registry().add(client_id, role, tenant, description)
    except ClientError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"client_id:     {client_id}\nclient_secret: {secret}")
    console.print("Store the secret now: only its hash is kept.", style="bold")


@app.command("list")
def list_clients() -> None:
    """The registered clients (without secrets)."""
    table = Table(title="OAuth2 clients")
    for column in ("client id", "roles", "tenant", "description"):
        table.add_column(column)
    for client in registry().all():
        table.add_row(client.client_id, ", ".join(client.roles), client.tenant, client.description)
    console.print(table)


@app.command()
def remove(client_id: Annotated[str, typer.Argument(help="Client id.")]) -> None:
    """Remove a client; its tokens stay valid until they expire."""
    if not registry().remove(client_id):
        raise typer.BadParameter(f"no client {client_id!r}")
    console.print(f"removed {client_id}")
