"""How a trace crosses the event streams (`consumer_spans`), where traces
begin (`EntryPoints`) and how an RPC's is decided (`SamplingGate`, on a real
gRPC server), against the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.trace import SpanKind

from services.kit.background import detached
from services.kit.batching import MicroBatcher
from services.kit.envelopes import Event
from services.kit.settings import Settings
from services.kit.telemetry import (
    EntryPoints,
    consumer_spans,
    outgoing_metadata,
    recorded_only,
    server_interceptors,
    trace_context,
)

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider(sampler=ParentBased(EntryPoints(1.0)))
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("test")


@pytest.fixture(autouse=True)
def provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # consumer_spans uses the global provider, which the API sets only once a
    # process: this module's stands in for its tests only.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", PROVIDER)
    EXPORTER.clear()


def _event(trace_id: str = "", event_id: str = "e1") -> Event:
    return Event(event_id, "InvoiceRegistered", "inv-1", 1, 1, "acme", trace_id, {})


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)  # the W3C flags' sampled bit


def _recorded(span_name: str) -> ReadableSpan:
    (found,) = [s for s in EXPORTER.get_finished_spans() if s.name == span_name]
    return found


def test_an_event_consumed_continues_the_trace_that_recorded_it() -> None:
    with TRACER.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER) as producer:
        recorded = _event(trace_context())
    with consumer_spans("invoice.events", [recorded]) as (continued,):
        current = trace.get_current_span().get_span_context()
        with TRACER.start_as_current_span("INSERT", kind=SpanKind.CLIENT):
            pass
    consumed = _recorded("invoice.events process")
    assert consumed.kind == SpanKind.CONSUMER
    assert consumed.context.trace_id == producer.get_span_context().trace_id
    assert consumed.parent is not None
    assert consumed.parent.span_id == producer.get_span_context().span_id
    assert [link.context.span_id for link in consumed.links] == [producer.get_span_context().span_id]
    assert current.span_id == consumed.context.span_id, "the work runs in the event's span"
    assert _recorded("INSERT").parent.span_id == consumed.context.span_id  # type: ignore[union-attr]
    # What the event causes carries the consumer span's context on.
    assert continued.trace_id.startswith(f"00-{consumed.context.trace_id:032x}-{consumed.context.span_id:016x}-")
    assert _sampled(continued.trace_id)
    assert continued.event_id == recorded.event_id


def test_a_batch_runs_in_a_span_linked_to_each_events_own() -> None:
    contexts = []
    for name in ("first", "second"):
        with TRACER.start_as_current_span(name, kind=SpanKind.SERVER) as producer:
            contexts.append((producer.get_span_context(), trace_context()))
    events = [_event(header, event_id=f"e{i}") for i, (_, header) in enumerate(contexts)]
    with consumer_spans("invoice.events", events) as continued:
        batch = trace.get_current_span().get_span_context()
    per_event = [s for s in EXPORTER.get_finished_spans() if s.name == "invoice.events process" and s.parent]
    assert sorted(s.context.trace_id for s in per_event) == sorted(c.trace_id for c, _ in contexts)
    (batch_span,) = [s for s in EXPORTER.get_finished_spans() if s.context.span_id == batch.span_id]
    assert batch_span.parent is None, "a batch belongs to no one registration's trace"
    assert {link.context.span_id for link in batch_span.links} == {s.context.span_id for s in per_event}
    assert batch_span.attributes is not None
    assert batch_span.attributes["messaging.batch.message_count"] == 2
    assert [e.trace_id.split("-")[1] for e in continued] == [f"{c.trace_id:032x}" for c, _ in contexts]


def test_an_event_without_trace_context_begins_one() -> None:
    with consumer_spans("invoice.events", [_event("not a traceparent")]) as (continued,):
        pass
    consumed = _recorded("invoice.events process")
    assert consumed.parent is None
    assert not consumed.links
    assert continued.trace_id.startswith(f"00-{consumed.context.trace_id:032x}-")


def test_traces_begin_where_work_enters_and_a_callers_decision_is_kept() -> None:
    with TRACER.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as orphan:
        assert not orphan.is_recording(), "a statement outside any span is no trace"
        assert not _sampled(trace_context()), "what it would cause is not recorded either"
    never = TracerProvider(sampler=ParentBased(EntryPoints(0.0))).get_tracer("test")
    with never.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER) as root:
        assert not root.is_recording(), "ratio 0 records no trace begun here"
    with TRACER.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER) as sampled:
        assert sampled.is_recording()
        with never.start_as_current_span("BatchGetProducts", kind=SpanKind.CLIENT) as child:
            assert child.is_recording(), "a sampled caller's trace is followed whatever the ratio"
    assert trace_context() == "", "outside any span"


def test_an_rpc_the_gate_let_through_is_recorded_whatever_the_ratio() -> None:
    """`SamplingGate` applied the ratio already: the sampler must not apply it twice."""
    never = EntryPoints(0.0)
    rpc = never.should_sample(None, 1 << 120, "/bmc.invoice.v1.InvoiceService/RegisterInvoice", SpanKind.SERVER,
                              {"rpc.system": "grpc"})  # fmt: skip
    request = never.should_sample(None, 1 << 120, "POST /v1/invoices", SpanKind.SERVER, {"http.route": "/v1/invoices"})
    assert rpc.decision == Decision.RECORD_AND_SAMPLE
    assert request.decision == Decision.DROP, "other entry points keep the ratio"


def test_an_unrecorded_trace_makes_no_spans_below_but_still_travels() -> None:
    never = TracerProvider(sampler=ParentBased(EntryPoints(0.0))).get_tracer("test")
    with never.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER) as unrecorded, recorded_only():
        assert not is_instrumentation_enabled(), "no statement, command or call spans"
        (sent,) = [value for key, value in outgoing_metadata() if key == "traceparent"]
        assert sent.split("-")[1] == f"{unrecorded.get_span_context().trace_id:032x}"
        assert not _sampled(sent), "the callee keeps the decision"
    with TRACER.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER), recorded_only():
        assert is_instrumentation_enabled()
        assert "traceparent" not in dict(outgoing_metadata()), "the client instrumentation sends it"


async def test_a_task_that_outlives_its_request_is_in_no_requests_trace() -> None:
    async def current() -> trace.SpanContext:
        return trace.get_current_span().get_span_context()

    with TRACER.start_as_current_span("RegisterInvoice", kind=SpanKind.SERVER) as request:
        inherited = await asyncio.create_task(current())
        worker = await detached(current(), "micro-batcher")
    assert inherited == request.get_span_context(), "a plain task would carry the request's span"
    assert not worker.is_valid


async def test_a_group_commit_continues_a_lone_request_and_links_a_crowd() -> None:
    seen: list[trace.SpanContext] = []

    async def handler(items: Sequence[int]) -> list[int]:
        seen.append(trace.get_current_span().get_span_context())
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(handler, max_wait=0.05)

    async def request(n: int) -> trace.SpanContext:
        with TRACER.start_as_current_span(f"RegisterInvoice {n}", kind=SpanKind.SERVER) as span:
            await batcher.submit(n)
            return span.get_span_context()

    alone = await request(0)
    crowd = await asyncio.gather(request(1), request(2))
    await batcher.close()
    assert seen[0] == alone, "a batch of one runs in its request's span"
    (group,) = [s for s in EXPORTER.get_finished_spans() if s.name == "group commit"]
    assert seen[1] == group.context
    assert {link.context.span_id for link in group.links} == {c.span_id for c in crowd}


# An RPC's decision is taken by `SamplingGate`, in front of the gRPC instrumentation, on a real server.
ECHO = "/bmc.test.Echo/Where"


async def _where(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    span = trace.get_current_span()
    sent = dict(outgoing_metadata()).get("traceparent", "")
    return json.dumps({
        "trace_id": f"{span.get_span_context().trace_id:032x}",
        "recording": span.is_recording(),
        "instrumented": is_instrumentation_enabled(),
        "sent": sent,
    }).encode()  # fmt: skip


@asynccontextmanager
async def _echo_server(ratio: float) -> AsyncIterator[grpc.aio.Channel]:
    settings = Settings(trace_sample_ratio=ratio)
    server = grpc.aio.server(interceptors=server_interceptors(settings))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bmc.test.Echo", {"Where": grpc.unary_unary_rpc_method_handler(_where)})]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def _call(channel: grpc.aio.Channel, traceparent: str = "") -> dict[str, object]:
    metadata = (("traceparent", traceparent),) if traceparent else ()
    answer: dict[str, object] = json.loads(await channel.unary_unary(ECHO)(b"", metadata=metadata))
    return answer


def _state(answer: dict[str, object]) -> tuple[object, object]:
    """Whether the handler's span was recording, and the instrumentations on."""
    return answer["recording"], answer["instrumented"]


def _sent(answer: dict[str, object]) -> tuple[str, bool]:
    """The trace id, and the sampled flag, of what the handler would send to a service it calls."""
    sent = str(answer["sent"])
    return sent.split("-")[1], _sampled(sent)


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
UNSAMPLED = f"00-{CALLER_TRACE}-00f067aa0ba902b7-00"


async def test_an_rpc_follows_its_callers_decision() -> None:
    async with _echo_server(ratio=0.0) as echo:
        recorded = await _call(echo, SAMPLED)
        unrecorded = await _call(echo, UNSAMPLED)
    assert recorded == {"trace_id": CALLER_TRACE, "recording": True, "instrumented": True, "sent": ""}
    (server_span,) = [s for s in EXPORTER.get_finished_spans() if s.name == ECHO]
    assert server_span.kind == SpanKind.SERVER
    assert server_span.parent is not None
    assert server_span.parent.span_id == 0x00F067AA0BA902B7
    # Not recorded: no span, no statement or call spans, yet the trace and its decision travel on.
    assert unrecorded["trace_id"] == CALLER_TRACE
    assert _state(unrecorded) == (False, False)
    assert _sent(unrecorded) == (CALLER_TRACE, False)
    assert len(EXPORTER.get_finished_spans()) == 1


async def test_an_rpc_that_begins_a_trace_is_recorded_at_the_ratio() -> None:
    async with _echo_server(ratio=1.0) as always:
        recorded = await _call(always)
    (root,) = EXPORTER.get_finished_spans()
    assert root.parent is None
    assert f"{root.context.trace_id:032x}" == recorded["trace_id"]
    assert _state(recorded) == (True, True)
    async with _echo_server(ratio=0.0) as never:
        first, second = await _call(never), await _call(never)
    assert len(EXPORTER.get_finished_spans()) == 1, "ratio 0: no span"
    for unrecorded in (first, second):
        assert _state(unrecorded) == (False, False)
        # A new trace id, unsampled, sent on so that the services called keep the decision.
        assert _sent(unrecorded) == (unrecorded["trace_id"], False)
    assert first["trace_id"] != second["trace_id"] != "0" * 32


async def test_health_checks_are_never_traced() -> None:
    async with _echo_server(ratio=1.0) as echo:
        check = echo.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answer = await check(health_pb2.HealthCheckRequest(), metadata=(("traceparent", SAMPLED),))
        recorded = await _call(echo)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert _state(recorded) == (True, True)
    assert [s.name for s in EXPORTER.get_finished_spans()] == [ECHO], "the probe made no span, even in a sampled trace"


async def test_an_unrecorded_rpc_leaves_nothing_behind_for_the_next() -> None:
    async with _echo_server(ratio=0.0) as echo:
        answers = await asyncio.gather(*(_call(echo, UNSAMPLED if n % 2 else SAMPLED) for n in range(20)))
        after = await _call(echo, SAMPLED)
    assert [a["recording"] for a in answers] == [n % 2 == 0 for n in range(20)]
    assert _state(after) == (True, True)
    assert len(EXPORTER.get_finished_spans()) == 11
    assert is_instrumentation_enabled(), "nor in the process that ran the server"
