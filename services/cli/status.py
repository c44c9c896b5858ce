"""`bmc status`: the platform as Prometheus sees it (`bmc up --observe`),
in the terminal. For each process: up or down, requests a second, the share
answered with a server error, p99 latency, and a sparkline of its rate over
the last ten minutes; each sidecar's health; each consumer group's lag and
oldest pending entry (with a sparkline of the lag); the outboxes; dead
letters; and the alerts firing. `--watch` redraws it every few seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from services.cli.observe import Prometheus

WINDOW_SECONDS, STEP_SECONDS = 600, 30
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS"
# Health checks and reflection are the load balancers' and operators' traffic, not the platform's.
APPLICATION = 'grpc_service!~"grpc[.].*"'
RATE = (
    f"sum by (process) (rate(grpc_server_handled_total{{{APPLICATION}}}[1m]))"
    " or sum by (process) (rate(bmc_http_requests_total[1m]))"
)
ERRORS = (
    f'sum by (process) (rate(grpc_server_handled_total{{{APPLICATION},grpc_code=~"{SERVER_ERRORS}"}}[1m]))'
    f" / sum by (process) (rate(grpc_server_handled_total{{{APPLICATION}}}[1m]) > 0)"
    ' or sum by (process) (rate(bmc_http_requests_total{status=~"5.."}[1m]))'
    " / sum by (process) (rate(bmc_http_requests_total[1m]) > 0)"
)
P99 = (
    f"histogram_quantile(0.99, sum by (process, le) (rate(grpc_server_handling_seconds_bucket{{{APPLICATION}}}[1m])))"
    " or histogram_quantile(0.99, sum by (process, le) (rate(bmc_http_request_seconds_bucket[1m])))"
)
LAG = "max by (stream, group) (bmc_stream_consumer_lag_entries)"
OLDEST = "max by (stream, group) (bmc_stream_oldest_pending_age_seconds)"
OUTBOX = "max by (relay) (bmc_outbox_oldest_unpublished_age_seconds)"
DEAD_LETTERS = "sum by (consumer) (increase(bmc_dead_letters_total[1h]))"
BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Process:
    name: str
    job: str  # "services" or "envoy"
    up: bool
    rate: float | None = None  # requests a second
    errors: float | None = None  # share answered with a server error
    p99: float | None = None  # seconds
    history: tuple[float, ...] = ()


@dataclass(frozen=True)
class Consumer:
    stream: str
    group: str
    lag: float
    oldest: float  # seconds
    history: tuple[float, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    processes: list[Process]
    consumers: list[Consumer]
    outboxes: dict[str, float]  # relay -> age of its oldest unpublished event, seconds
    dead_letters: dict[str, float]  # consumer -> set aside in the last hour
    firing: list[str]


def sparkline(values: tuple[float, ...]) -> str:
    """Values as bar heights (the highest fills the cell); "" when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    top = max(finite) or 1.0
    return "".join(
        BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1)))] if math.isfinite(v) else " " for v in values
    )


def _by(prometheus: Prometheus, expression: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
        for sample in prometheus.query(expression)
    }


def take(prometheus: Prometheus) -> Snapshot:
    """The figures now, and the last ten minutes of rates and lags."""
    up = [(s["metric"], float(s["value"][1])) for s in prometheus.query("up")]
    rate, errors, p99 = (_by(prometheus, q, "process") for q in (RATE, ERRORS, P99))
    rates = prometheus.series(RATE, WINDOW_SECONDS, STEP_SECONDS, "process")
    processes = sorted(
        (
            Process(
                name=metric.get("process", metric.get("instance", "?")),
                job=metric.get("job", ""),
                up=value == 1,
                rate=rate.get((metric.get("process", ""),)),
                errors=errors.get((metric.get("process", ""),)),
                p99=p99.get((metric.get("process", ""),)),
                history=tuple(rates.get((metric.get("process", ""),), ())),
            )
            for metric, value in up
        ),
        key=lambda p: (p.job != "services", p.name),
    )
    lags, oldest = _by(prometheus, LAG, "stream", "group"), _by(prometheus, OLDEST, "stream", "group")
    lag_history = prometheus.series(LAG, WINDOW_SECONDS, STEP_SECONDS, "stream", "group")
    consumers = [
        Consumer(stream, group, lag, oldest.get((stream, group), 0.0), tuple(lag_history.get((stream, group), ())))
        for (stream, group), lag in sorted(lags.items())
    ]
    return Snapshot(
        processes,
        consumers,
        {relay: age for (relay,), age in sorted(_by(prometheus, OUTBOX, "relay").items())},
        {consumer: n for (consumer,), n in sorted(_by(prometheus, DEAD_LETTERS, "consumer").items()) if n > 0},
        sorted({s["metric"]["alertname"] for s in prometheus.query('ALERTS{alertstate="firing"}')}),
    )


def _figure(value: float | None, form: str) -> str:
    return "-" if value is None or not math.isfinite(value) else form.format(value)


def render(snapshot: Snapshot) -> Group:
    processes = Table(title="Processes", title_justify="left")
    for column in ("process", "health", "req/s", "server errors", "p99", "last 10 min"):
        processes.add_column(column, justify="right" if column in ("req/s", "server errors", "p99") else "left")
    for p in snapshot.processes:
        health = Text("up", style="green") if p.up else Text("DOWN", style="bold red")
        name = p.name if p.job == "services" else f"envoy {p.name}"
        processes.add_row(
            name, health, _figure(p.rate, "{:.1f}"), _figure(p.errors, "{:.1%}"),
            _figure(None if p.p99 is None else p.p99 * 1000, "{:.0f} ms"), sparkline(p.history),
        )  # fmt: skip
    streams = Table(title="Streams", title_justify="left")
    for column in ("stream", "group", "lag", "oldest pending", "last 10 min"):
        streams.add_column(column)
    for c in snapshot.consumers:
        style = "bold red" if c.oldest > 300 else ("yellow" if c.lag else "")
        streams.add_row(c.stream, c.group, Text(f"{c.lag:.0f}", style=style), f"{c.oldest:.0f} s", sparkline(c.history))
    outboxes = ", ".join(f"{relay} {age:.0f} s" for relay, age in snapshot.outboxes.items()) or "-"
    letters = ", ".join(f"{consumer} {n:.0f}" for consumer, n in snapshot.dead_letters.items()) or "none"
    alerts = Text(", ".join(snapshot.firing), style="bold red") if snapshot.firing else Text("none", style="green")
    return Group(
        processes,
        streams,
        Text(f"Outbox, oldest unpublished: {outboxes}"),
        Text(f"Dead letters in the last hour: {letters}"),
        Text.assemble("Alerts firing: ", alerts),
    )
