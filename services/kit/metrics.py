"""Prometheus metrics of every process (prometheus-client), served on a port
of its own (`metrics_port`): RPCs by method and status code with a latency
histogram, event streams (consumed, redelivered, lag and the age of the
oldest pending entry per stream and group), the outbox relay (published,
delay from record to stream, age of the oldest unpublished event), dead
letters, and what each service adds of its own.

Labels are low-cardinality by construction: service, method, status code,
stream, group, relay, outcome reasons. Never a tenant, an invoice number, a
NIT or any other value a caller chooses (`tests/integration/test_metrics.py`
walks every family to hold that).

The RPC names follow go-grpc-prometheus (`grpc_server_handled_total`,
`grpc_server_handling_seconds`), so the usual dashboards and alert rules
apply unchanged."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.kit.interception import MethodInfo
from services.kit.settings import Settings

log = structlog.get_logger("bmc.metrics")

# Seconds: a registration takes milliseconds, an OCR page about one, a settlement many.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPC_STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_service", "grpc_method", "grpc_type"]
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by gRPC status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to complete an RPC on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=LATENCY_BUCKETS,
)

EVENTS_CONSUMED = Counter(
    "bmc_stream_events_consumed_total", "Stream entries a consumer group was done with.", ["stream", "group"]
)
EVENTS_REDELIVERED = Counter(
    "bmc_stream_events_redelivered_total",
    "Entries read again: a failed read retried, or reclaimed from a member that died.",
    ["stream", "group"],
)
CONSUMER_LAG = Gauge(
    "bmc_stream_consumer_lag_entries",
    "Entries of the stream the group has not read yet (Redis' own count).",
    ["stream", "group"],
)
CONSUMER_PENDING = Gauge(
    "bmc_stream_consumer_pending_entries", "Entries read by the group and not acknowledged yet.", ["stream", "group"]
)
OLDEST_PENDING = Gauge(
    "bmc_stream_oldest_pending_age_seconds",
    "Age of the oldest entry the group read and has not acknowledged (0 when none).",
    ["stream", "group"],
)

OUTBOX_PUBLISHED = Counter("bmc_outbox_published_total", "Events the relay published to its stream.", ["relay"])
OUTBOX_DELAY = Histogram(
    "bmc_outbox_relay_delay_seconds",
    "Time from an event's record to its publication on the stream.",
    ["relay"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_OLDEST = Gauge(
    "bmc_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest event not yet published when the relay last looked (0 when none was waiting).",
    ["relay"],
)

# What each service adds of its own.
REGISTRATIONS = Counter(
    "bmc_invoice_registrations_total",
    "Invoice registrations answered: accepted (new or a retry of one), or refused with its reason.",
    ["outcome", "reason"],
)
CACHE_LOOKUPS = Counter("bmc_product_cache_lookups_total", "Product codes looked up in the cache.", ["result"])
OCR_PAGES = Counter("bmc_ocr_pages_total", "Pages read, by where their fields came from.", ["source"])
OCR_HELD = Counter(
    "bmc_ocr_fields_held_total", "Key fields an extraction holds for a person's confirmation.", ["field"]
)
CERTIFICATES_ISSUED = Counter("bmc_certificates_issued_total", "Certificates issued and sealed.")

HTTP_REQUESTS = Counter("bmc_http_requests_total", "Requests the REST gateway answered.", ["route", "method", "status"])
HTTP_SECONDS = Histogram(
    "bmc_http_request_seconds", "Time the REST gateway took to answer.", ["route", "method"], buckets=LATENCY_BUCKETS
)

# Long-running operations (catalog and invoice imports, settlements), by kind: progress as a rate.
OPERATIONS_RUNNING = Gauge("bmc_operations_running", "Operations this process is running.", ["kind"])
OPERATION_UNITS = Counter(
    "bmc_operation_units_total", "Units of work operations got through (rows, invoices), done or rejected.",
    ["kind", "outcome"],
)  # fmt: skip
OPERATIONS_FINISHED = Counter("bmc_operations_finished_total", "Operations finished, by how.", ["kind", "state"])

# Dependencies: the breaker on each service this one calls, and the database pool.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
BREAKER_STATE = Gauge(
    "bmc_circuit_breaker_state", "The circuit breaker on a dependency: 0 closed, 1 half-open, 2 open.", ["dependency"]
)
BREAKER_OPENED = Counter("bmc_circuit_breaker_opened_total", "Times a dependency's breaker opened.", ["dependency"])
DB_POOL = Gauge("bmc_db_pool_connections", "Connections of the database pool, in use or idle.", ["state"])
DB_POOL_WAITING = Gauge("bmc_db_pool_waiting", "Callers waiting for a connection of the database pool.")

DEAD_LETTERS = Counter("bmc_dead_letters_total", "Events set aside as dead letters.", ["consumer"])
DEAD_LETTERS_REDRIVEN = Counter(
    "bmc_dead_letters_redriven_total", "Dead letters applied again at an operator's request.", ["consumer"]
)

# The port blocks of this machine's plan (services.mesh.render.local_placement) end at 400.
METRICS_BLOCK = 500
GATEWAY_OFFSET = 6


def metrics_port(settings: Settings, offset: int, replica: int = 0) -> int:
    """Where the process at `offset` (replica `replica`) serves /metrics:
    `BMC_METRICS_PORT` when set (one process per task, as in ECS), else this
    machine's plan, BMC_PORT_BASE + 500 + 10 × offset + replica."""
    return settings.metrics_port or settings.port_base + METRICS_BLOCK + 10 * offset + replica


def serve_metrics(settings: Settings, offset: int) -> int | None:
    """Starts the /metrics endpoint (a thread of prometheus-client's); its
    port, or None when another worker process of the service holds it
    (`BMC_WORKERS` > 1 share one gRPC port; the first to start serves its
    own figures)."""
    port = metrics_port(settings, offset, settings.replica)
    try:
        start_http_server(port, addr=settings.bind_host)
    except OSError as exc:
        if settings.workers > 1:
            log.warning("metrics port held by another worker", port=port)
            return None
        raise SystemExit(f"cannot serve metrics on port {port}: {exc}") from exc
    return port


def _rpc_type(method: MethodInfo) -> str:
    descriptor = method.descriptor
    if descriptor is None:
        return "unary"
    streams = (descriptor.client_streaming, descriptor.server_streaming)
    return {(False, False): "unary", (True, False): "client_stream", (False, True): "server_stream"}.get(
        streams, "bidi_stream"
    )


class _MethodSeries:
    """One method's labelled series (`labels()` costs more than the count itself, so once)."""

    def __init__(self, method: MethodInfo) -> None:
        self.labels = (method.service, method.name, _rpc_type(method))
        self.started = RPC_STARTED.labels(*self.labels)
        self.seconds = RPC_SECONDS.labels(*self.labels)
        self.handled: dict[str, Any] = {}

    def finished(self, code: str, seconds: float) -> None:
        counter = self.handled.get(code)
        if counter is None:
            counter = self.handled[code] = RPC_HANDLED.labels(*self.labels, code)
        counter.inc()
        self.seconds.observe(seconds)


class RpcSeries:
    """Counts of RPCs when they start and when they end, with their status
    code and duration (`RpcStatsInterceptor` reports them)."""

    def __init__(self) -> None:
        self._of: dict[str, _MethodSeries] = {}

    def started(self, method: MethodInfo) -> _MethodSeries:
        series = self._of.get(method.full_method)
        if series is None:
            series = self._of[method.full_method] = _MethodSeries(method)
        series.started.inc()
        return series


def watch_pool(pool: asyncpg.Pool) -> None:
    """Reports the pool's connections in use and idle, and its waiters, when scraped."""
    DB_POOL.labels("in_use").set_function(lambda: pool.get_size() - pool.get_idle_size())
    DB_POOL.labels("idle").set_function(pool.get_idle_size)
    DB_POOL_WAITING.set_function(lambda: _waiting(pool))


def _waiting(pool: asyncpg.Pool) -> float:
    # asyncpg counts no waiters publicly; they are the pending getters of the
    # pool's holder queue (an asyncio.Queue). Should that change, NaN, not a lie.
    getters = getattr(getattr(pool, "_queue", None), "_getters", None)
    return float("nan") if getters is None else sum(1 for waiter in getters if not waiter.done())
