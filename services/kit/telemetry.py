"""Structured JSON logs, and traces from OpenTelemetry's instrumentations.

Every RPC gets a server span (`opentelemetry-instrumentation-grpc`), every
call to another service a client span that carries the W3C trace context,
every statement and Redis command a span of its own (the asyncpg and redis
instrumentations), and the REST edge a span per request (aiohttp-server).
Events take the trace context along (`trace_context()` writes it, the
consumer continues it: `consumer_spans`). Spans are exported over OTLP
when `BMC_OTLP_ENDPOINT` is set; without it they are still made, so trace
ids appear in logs and propagate to callees.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY  # what the instrumentations' suppression sets
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind
from opentelemetry.util.types import Attributes, AttributeValue

from services.kit.auth import current_principal
from services.kit.envelopes import Event
from services.kit.interception import Context, MethodInfo, ScopedInterceptor, infrastructure_method, metadata_value
from services.kit.metrics import RpcSeries
from services.kit.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
_TRACER = trace.get_tracer("bmc.kit")  # a proxy: it follows the provider configure_tracing sets
TRACEPARENT = "traceparent"
_TRACE_HEADERS = frozenset({TRACEPARENT, "tracestate"})
request_id_var: ContextVar[str] = ContextVar("request_id", default="")


def _add_trace_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event["trace_id"] = format(span_context.trace_id, "032x")
        event["span_id"] = format(span_context.span_id, "016x")
    request_id = request_id_var.get()
    if request_id:
        event["request_id"] = request_id
    return event


def configure_logging(settings: Settings, service: str) -> None:
    """JSON lines on stderr (or coloured text), with service, trace and request ids."""
    level = logging.getLevelName(settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_context,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


class EntryPoints(Sampler):
    """Traces begin where work enters (an RPC, a request, an event consumed),
    a `ratio` of them recorded. A statement or Redis command with no span
    around it (a consumer's poll, a relay's loop, a readiness probe) would
    otherwise be a trace of its own, several a second per process, each
    saying nothing. An RPC has been through `SamplingGate` already, which
    let it reach its span only if its trace is to be recorded."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        if kind == SpanKind.SERVER and attributes and attributes.get("rpc.system") == "grpc":
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"EntryPoints({self._ratio.get_description()})"


def configure_tracing(settings: Settings, service: str) -> None:
    """A tracer provider for `bmc-<service>` (exporting over OTLP when
    configured) and the asyncpg and Redis instrumentations; nothing when
    telemetry is off."""
    if not settings.telemetry:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"bmc-{service}"}),
        sampler=ParentBased(EntryPoints(settings.trace_sample_ratio)),
    )
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()


class SamplingGate:
    """Whether an RPC's trace is recorded, decided before the gRPC
    instrumentation does anything: this is its `filter_`, and lets through
    only the RPCs to record.

    In a trace not recorded the instrumentation would still do all its work
    for nothing (a span, its attributes, a proxy around the servicer context
    that every later interceptor calls through): measured, more than half as
    much again as the rest of the interceptor chain, for every RPC. So the
    sampler's decision is taken here, once: a caller's sampled flag is
    followed; an RPC that begins a trace is recorded at `ratio`. An RPC not
    recorded runs with its trace context current (the caller's, or a new
    unsampled one: the services it calls keep the decision, its log lines
    carry a trace id) and the instrumentations suppressed (no statement,
    command or call spans), until it ends: gRPC runs each RPC in a task of
    its own, its interceptors and its handler alike.

    Health checks and reflection are the mesh's and operators' probes, not
    work: never traced."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)
        self._ids = RandomIdGenerator()

    def __call__(self, details: grpc.HandlerCallDetails) -> bool:
        if infrastructure_method(details.method):
            return False
        carrier = {key: value for key, value in details.invocation_metadata or () if key in _TRACE_HEADERS}
        carried = propagate.extract(carrier) if carrier else otel_context.Context()
        parent = trace.get_current_span(carried).get_span_context()
        if parent.is_valid:
            if parent.trace_flags.sampled:
                return True
            unrecorded = parent
        else:
            trace_id = self._ids.generate_trace_id()
            if trace_id & self._ratio.TRACE_ID_LIMIT < self._ratio.bound:  # the sampler's own test, on every RPC
                return True
            unrecorded = SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False)
        within = trace.set_span_in_context(NonRecordingSpan(unrecorded), carried)
        otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, within))
        return False


@contextmanager
def recorded_only() -> Iterator[None]:
    """Within a trace that is not recorded, the instrumentations make no spans
    at all (their own suppression): a non-recording span per statement,
    command and call still costs its bookkeeping. The trace context still
    travels to the services called (`outgoing_metadata`), so they keep the
    decision. (An RPC gets this from `SamplingGate`; work begun otherwise,
    a request at the REST edge, an event consumed, a batch, uses this.)"""
    if trace.get_current_span().is_recording():
        yield
    else:
        with suppress_instrumentation():
            yield


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """A server span per RPC recorded, continuing the caller's W3C trace context."""
    if not settings.telemetry:
        return []
    gate = SamplingGate(settings.trace_sample_ratio)
    return [aio_server_interceptor(filter_=gate)]  # type: ignore[no-untyped-call]


def client_interceptors(settings: Settings) -> list[grpc.aio.ClientInterceptor]:
    """A client span per call, its trace context sent along."""
    return list(aio_client_interceptors()) if settings.telemetry else []  # type: ignore[no-untyped-call]


def outgoing_metadata() -> list[tuple[str, str]]:
    """The request id to pass on to a service this one calls, and the trace
    context where the client instrumentation is suppressed (`recorded_only`;
    otherwise it sends the context itself)."""
    carrier: dict[str, str] = {}
    if not is_instrumentation_enabled():
        propagate.inject(carrier)
    request_id = request_id_var.get()
    if request_id:
        carrier[REQUEST_ID_HEADER] = request_id
    return list(carrier.items())


def _traceparent(span: trace.Span) -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


def trace_context() -> str:
    """The current span's W3C `traceparent`, recorded with the events it
    causes (in their `trace_id`); "" outside any trace."""
    return _traceparent(trace.get_current_span())


@contextmanager
def consumer_spans(stream: str, events: Sequence[Event]) -> Iterator[list[Event]]:
    """A span per event consumed from `stream`, continuing the trace that
    recorded it: its parent, and linked, is the `traceparent` the event
    carries. Yields the events with that context now their consumer span's,
    so whatever they cause continues the same trace. The work runs `in_batch`."""
    if not events:
        yield []
        return
    attributes = {
        "messaging.system": "redis",
        "messaging.destination.name": stream,
        "messaging.operation.type": "process",
    }
    spans = []
    for event in events:
        parent = propagate.extract({TRACEPARENT: event.trace_id})
        producer = trace.get_current_span(parent).get_span_context()
        spans.append(
            _TRACER.start_span(
                f"{stream} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=[Link(producer)] if producer.is_valid else (),
                attributes={**attributes, "bmc.event.type": event.type},
            )
        )
    continued = [
        dataclasses.replace(e, trace_id=_traceparent(s) or e.trace_id) for e, s in zip(events, spans, strict=True)
    ]
    try:
        batch: dict[str, AttributeValue] = {**attributes, "messaging.batch.message_count": len(spans)}
        with in_batch(f"{stream} process", spans, SpanKind.CONSUMER, batch):
            yield continued
    finally:
        for span in spans:
            span.end()


@contextmanager
def in_batch(
    name: str, spans: Sequence[trace.Span], kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> Iterator[None]:
    """Work done once for several requests or events (one transaction, one
    lookup). For one, it runs in that one's span, whose trace it continues;
    for several, in a span of its own (`name`) linked to each one's. Either
    way under `recorded_only`."""
    if len(spans) == 1:
        with trace.use_span(spans[0]), recorded_only():
            yield
        return
    links = [Link(c) for span in spans if (c := span.get_span_context()).is_valid]
    with (
        _TRACER.start_as_current_span(
            name,
            context=otel_context.Context(),
            kind=kind,
            links=links,
            attributes={**(attributes or {}), "bmc.batch.size": len(spans)},
        ),
        recorded_only(),
    ):
        yield


def forwarded_identities(header: str) -> list[str]:
    """The SPIFFE IDs of an `x-forwarded-client-cert` chain, in order (its
    elements are comma-separated, each `Key=value` pairs joined by `;`,
    values possibly quoted). Only sidecars and the edge set the header."""
    identities = []
    for element in re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', header):
        for pair in re.split(r';(?=(?:[^"]*"[^"]*")*[^"]*$)', element):
            key, _, value = pair.strip().partition("=")
            if key.lower() == "uri" and value.strip('"'):
                identities.append(value.strip('"'))
    return identities


class RpcStatsInterceptor(ScopedInterceptor):
    """What every RPC leaves behind, measured once: a structured log line
    (method, status, duration, caller, request id) and, with telemetry on,
    its count and duration (`RpcSeries`). Health checks and reflection are
    counted, being what the load balancers see, but not logged. One layer
    for both: each layer of interceptors costs an RPC its own coroutines."""

    def __init__(self, series: RpcSeries | None) -> None:
        super().__init__()
        self._log = structlog.get_logger("bmc.rpc")
        self._series = series

    def applies_to(self, method: MethodInfo) -> bool:
        return self._series is not None or not method.infrastructure

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        series = self._series.started(method) if self._series is not None else None
        logged = not method.infrastructure
        token = request_id_var.set(metadata_value(context, REQUEST_ID_HEADER) or uuid.uuid4().hex) if logged else None
        started = time.perf_counter()
        failed = True
        try:
            yield request
            failed = False
        finally:
            seconds = time.perf_counter() - started
            # An abort sets the code before raising; an exception that escaped unmapped is UNKNOWN.
            code = context.code()
            code_name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
            if series is not None:
                series.finished(code_name, seconds)
            if token is not None:
                self._log_rpc(method, code_name, seconds, context)
                request_id_var.reset(token)

    def _log_rpc(self, method: MethodInfo, code_name: str, seconds: float, context: Context) -> None:
        principal = current_principal()
        self._log.info(
            "rpc",
            method=method.full_method,
            code=code_name,
            duration_ms=round(seconds * 1000, 3),
            subject=principal.subject if principal else None,
            tenant=principal.tenant if principal else None,
            peer=context.peer(),
            # In the mesh: the workloads the call came through, first the one that began it.
            via=forwarded_identities(metadata_value(context, "x-forwarded-client-cert") or "") or None,
        )
