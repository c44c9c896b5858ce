"""`bmc events dead-letters` and `bmc events redrive`: the events consumers
set aside after failing to apply them, and re-driving them once the cause
is fixed."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from bmc.common.v1 import events_pb2
from services.kit.clients import bearer, sync_channel
from services.kit.settings import get_settings
from services.kit.tokens import mint_token

app = typer.Typer(help="Events between services: dead letters.", no_args_is_help=True)
console = Console()
CONSUMERS = ("invoice", "commission", "certificate")  # the services that apply other services' events


def _stub(service: str) -> tuple[Any, Any, tuple[tuple[str, str], ...], grpc.Channel]:
    settings = get_settings()
    grpc_module = importlib.import_module(f"bmc.{service}.v1.{service}_service_pb2_grpc")
    messages = importlib.import_module(f"bmc.{service}.v1.{service}_service_pb2")
    channel = sync_channel(settings, service)
    stub = getattr(grpc_module, f"{service.capitalize()}ServiceStub")(channel)
    return stub, messages, bearer(mint_token(settings, subject="bmc-cli", roles=["operator"])), channel


def _letters(service: str, everything: bool) -> Iterator[events_pb2.DeadLetter]:
    stub, messages, metadata, channel = _stub(service)
    with channel:
        token = ""
        while True:
            page = stub.ListDeadLetters(
                messages.ListDeadLettersRequest(page_size=1000, page_token=token), metadata=metadata, timeout=30
            )
            for letter in page.dead_letters:
                if everything or letter.state == events_pb2.DeadLetter.STATE_PENDING:
                    yield letter
            token = page.next_page_token
            if not token:
                return


@app.command("dead-letters")
def dead_letters(
    service: Annotated[str, typer.Option(help="Only this consumer (invoice, commission, certificate).")] = "",
    everything: Annotated[bool, typer.Option("--all", help="Also those already re-driven.")] = False,
) -> None:
    """List the events consumers set aside."""
    table = Table("dead letter", "source", "event", "type", "position", "attempts", "state", "error")
    count = 0
    for consumer in [service] if service else CONSUMERS:
        for letter in _letters(consumer, everything):
            count += 1
            table.add_row(
                letter.name,
                letter.source,
                letter.event.event_id or "(not an event)",
                letter.event.type,
                str(letter.event.position or ""),
                str(letter.attempts),
                events_pb2.DeadLetter.State.Name(letter.state).removeprefix("STATE_").lower(),
                letter.error[:120],
            )
    console.print(table if count else "[green]no dead letters[/]")


@app.command()
def redrive(
    names: Annotated[list[str] | None, typer.Argument(help="Dead letters, e.g. commissionDeadLetters/3.")] = None,
    pending: Annotated[bool, typer.Option("--all-pending", help="Re-drive every pending dead letter.")] = False,
) -> None:
    """Apply dead letters' events again (after fixing what made them fail)."""
    targets = list(names or [])
    if pending:
        targets += [letter.name for consumer in CONSUMERS for letter in _letters(consumer, False)]
    if not targets:
        raise typer.BadParameter("name dead letters, or pass --all-pending")
    failed = 0
    for name in targets:
        service = name.split("DeadLetters/", 1)[0]
        if service not in CONSUMERS:
            raise typer.BadParameter(f"{name}: not a dead letter of {', '.join(CONSUMERS)}")
        stub, messages, metadata, channel = _stub(service)
        with channel:
            try:
                stub.RedriveDeadLetter(messages.RedriveDeadLetterRequest(name=name), metadata=metadata, timeout=90)
                console.print(f"[green]applied[/] {name}")
            except grpc.RpcError as exc:
                failed += 1
                console.print(f"[red]failed[/] {name}: {exc.details()}")
    if failed:
        raise typer.Exit(1)
