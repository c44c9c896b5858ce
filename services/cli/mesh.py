"""`bmc mesh render`: the Envoy bootstraps of the mesh, from `mesh/mesh.toml`."""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.kit.clients import CLI
from services.kit.settings import get_settings
from services.mesh import envoy, files
from services.mesh.access import operator
from services.mesh.sidecars import names_and_admin_ports, summary
from services.mesh.spec import load

app = typer.Typer(help="The service mesh: Envoy sidecars and the edge.", no_args_is_help=True)
console = Console()


@app.command()
def render(check: Annotated[bool, typer.Option("--check", help="Only say whether mesh/ is stale.")] = False) -> None:
    """Render mesh/local/ and mesh/aws/ from mesh/mesh.toml."""
    if check:
        stale = files.stale()
        if stale:
            console.print(f"[red]stale[/]: {', '.join(stale)}; run `bmc mesh render`")
            raise typer.Exit(1)
        console.print("mesh/ is up to date")
        return
    written = files.write()
    console.print(f"rendered {len(written)} Envoy bootstraps into {files.MESH_DIR}/local and /aws")


@app.command()
def status() -> None:
    """Each sidecar of the running mesh: its identity and what its counters say."""
    settings = get_settings()
    spec = load()
    table = Table("sidecar", "identity")
    rows: list[tuple[str, str, dict[str, int]]] = []
    for name, port in names_and_admin_ports(settings).items():
        try:
            figures = summary(envoy.counters(port))
        except OSError:
            rows.append((name, "[red]not running[/]", {}))
            continue
        identity = spec.identity(name.rsplit("-", 1)[0] if name[-1].isdigit() else name)
        rows.append((name, identity, figures))
    columns = next((list(f) for _, _, f in rows if f), [])
    for column in columns:
        table.add_column(column, justify="right")
    for name, identity, figures in rows:
        table.add_row(name, identity, *(f"{figures[c]:,}" if figures else "" for c in columns))
    console.print(table)
    if all(not figures for _, _, figures in rows):
        raise typer.Exit(1)


@app.command("operator")
def operator_certificate(
    name: Annotated[str, typer.Argument(help="The operator (a lower-case name: letters, digits, dashes).")] = CLI,
) -> None:
    """Issue (or renew) an operator's client certificate for the edge's gRPC
    and print grpcurl's flags: grpcurl $(bmc mesh operator) localhost:8444 list"""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name):
        raise typer.BadParameter("letters, digits and dashes, starting with a letter", param_hint="NAME")
    identity = operator(get_settings(), name)
    print(" ".join(identity.grpcurl_flags))
    Console(stderr=True).print(f"{identity.spiffe_id}, certificate in {identity.directory}", style="dim")
