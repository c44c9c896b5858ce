"""Structured JSON logs and OpenTelemetry spans, and the two interceptors
that give every RPC a span and a log line carrying trace and request ids.

Telemetry is optional by design: spans are exported only when
`BMC_OTLP_ENDPOINT` is set; without it they are still created (so trace ids
appear in logs and propagate to callees) but go nowhere.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import grpc
import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.kit.auth import current_principal
from services.kit.interception import Context, MethodInfo, ScopedInterceptor, metadata_value
from services.kit.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
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


def configure_tracing(settings: Settings, service: str) -> None:
    """A tracer provider for `bmc-<service>`, exporting over OTLP when configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"bmc-{service}"}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)


def outgoing_metadata() -> list[tuple[str, str]]:
    """Trace context and request id to pass on to a service this one calls."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    request_id = request_id_var.get()
    if request_id:
        carrier[REQUEST_ID_HEADER] = request_id
    return list(carrier.items())


class TracingInterceptor(ScopedInterceptor):
    """A server span per RPC, continuing the caller's W3C trace context."""

    def __init__(self) -> None:
        super().__init__()
        self._tracer = trace.get_tracer("bmc.kit")

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        carrier = {
            key: value if isinstance(value, str) else value.decode(errors="replace")
            for key, value in context.invocation_metadata() or ()
        }
        parent = propagate.extract(carrier)
        with self._tracer.start_as_current_span(
            method.full_method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield request
            finally:
                code = context.code()
                if isinstance(code, grpc.StatusCode):
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code not in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                        span.set_status(Status(StatusCode.ERROR, code.name))


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


class LoggingInterceptor(ScopedInterceptor):
    """One structured line per RPC: method, status, duration, caller, request id."""

    def __init__(self) -> None:
        super().__init__()
        self._log = structlog.get_logger("bmc.rpc")

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        request_id = metadata_value(context, REQUEST_ID_HEADER) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            yield request
        finally:
            code = context.code()
            code_name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            principal = current_principal()
            self._log.info(
                "rpc",
                method=method.full_method,
                code=code_name,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                subject=principal.subject if principal else None,
                tenant=principal.tenant if principal else None,
                peer=context.peer(),
                # In the mesh: the workloads the call came through, first the one that began it.
                via=forwarded_identities(metadata_value(context, "x-forwarded-client-cert") or "") or None,
            )
            request_id_var.reset(token)
