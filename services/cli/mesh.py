"""`bmc mesh render`: the Envoy bootstraps of the mesh, from `mesh/mesh.toml`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from services.mesh import files

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
