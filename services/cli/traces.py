"""An in-memory OTLP collector, and a trace read from it. The platform's
processes export their spans to it (`BMC_OTLP_ENDPOINT`) over the same
OTLP/gRPC an ADOT collector receives in AWS, when `bmc demo` shows a
registration's journey and in the tests. It keeps the spans of the traces
it is asked to watch (every process exports all it records; the others are
only counted)."""

from __future__ import annotations

import io
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from rich.console import Console
from rich.tree import Tree

KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in trace_pb2.Span.SpanKind.items()}


@dataclass(frozen=True)
class CollectedSpan:
    service: str  # the exporting process's service.name (bmc-invoice...)
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER...
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    links: tuple[str, ...]  # the span ids it links to
    attributes: dict[str, str]
    start: int  # Unix nanoseconds
    end: int

    @property
    def milliseconds(self) -> float:
        return (self.end - self.start) / 1e6


def _text(value: common_pb2.AnyValue) -> str:
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else ""


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._watched: dict[str, list[CollectedSpan]] = {}
        self._lock = threading.Lock()
        self.received: Counter[tuple[str, str]] = Counter()  # spans by (service, name), watched or not

    def watch(self, trace_id: str) -> None:
        with self._lock:
            self._watched.setdefault(trace_id, [])

    def spans(self, trace_id: str) -> list[CollectedSpan]:
        with self._lock:
            return list(self._watched.get(trace_id, []))

    def Export(  # noqa: N802 - the generated servicer's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    trace_id = span.trace_id.hex()
                    with self._lock:
                        self.received[service, span.name] += 1
                        kept = self._watched.get(trace_id)
                        if kept is None:
                            continue
                        kept.append(
                            CollectedSpan(
                                service=service,
                                name=span.name,
                                kind=KINDS.get(span.kind, str(span.kind)),
                                trace_id=trace_id,
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                links=tuple(link.span_id.hex() for link in span.links),
                                attributes={a.key: _text(a.value) for a in span.attributes},
                                start=span.start_time_unix_nano,
                                end=span.end_time_unix_nano,
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def collector() -> Iterator[tuple[Collector, str]]:
    """A running collector and its endpoint (`http://127.0.0.1:<port>`)."""
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


# What a registration's trace holds, from the edge to its certificate: (service, span kind, part of the name).
REGISTRATION_HOPS = [
    ("bmc-gateway", "SERVER", "POST /v1/invoices"),
    ("bmc-invoice", "SERVER", "InvoiceService/RegisterInvoice"),
    ("bmc-product", "SERVER", "ProductService/"),
    ("bmc-commission", "CONSUMER", "invoice.events process"),
    ("bmc-certificate", "CONSUMER", "commission.events process"),
]


class Trace:
    """The spans of one trace, as a tree."""

    def __init__(self, spans: list[CollectedSpan]) -> None:
        self.spans = spans
        self.by_id = {s.span_id: s for s in spans}

    def find(self, service: str, kind: str, name: str, under: CollectedSpan | None = None) -> CollectedSpan | None:
        """The span of `service` of that kind whose name contains `name`, below `under` when given."""
        for span in self.spans:
            matches = span.service == service and span.kind == kind and name in span.name
            if matches and (under is None or self.descends(span, under)):
                return span
        return None

    def descends(self, span: CollectedSpan, ancestor: CollectedSpan) -> bool:
        seen = span
        while seen.parent_id in self.by_id:
            seen = self.by_id[seen.parent_id]
            if seen is ancestor:
                return True
        return False

    def complete(self, hops: list[tuple[str, str, str]], root_parent: str) -> bool:
        """Whether every hop has arrived and no span hangs loose (each process exports on its own schedule)."""
        return all(self.find(*hop) for hop in hops) and not self.loose(root_parent)

    def loose(self, root_parent: str) -> list[CollectedSpan]:
        """Spans whose parent is neither in the trace nor `root_parent` (not arrived yet, or lost)."""
        return [s for s in self.spans if s.parent_id != root_parent and s.parent_id not in self.by_id]

    def tree(self, hide: Callable[[CollectedSpan], bool] = lambda span: False) -> Tree:
        """The spans under their parents, in start order, with their service and duration."""
        roots = [s for s in self.spans if s.parent_id not in self.by_id]
        top = Tree(f"trace {self.spans[0].trace_id}" if self.spans else "no spans")

        def add(branch: Tree, span: CollectedSpan) -> None:
            label = f"[bold]{span.service.removeprefix('bmc-')}[/] {span.kind.lower()} {span.name} "
            node = branch.add(label + f"[dim]{span.milliseconds:.1f} ms[/]")
            for child in sorted((c for c in self.spans if c.parent_id == span.span_id), key=lambda c: c.start):
                if not hide(child):
                    add(node, child)

        for root in sorted(roots, key=lambda s: s.start):
            add(top, root)
        return top

    def __str__(self) -> str:
        """The tree as plain text (a failing test's message)."""
        out = Console(file=io.StringIO(), width=200, color_system=None)
        out.print(self.tree())
        return out.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def main() -> None:
    """`python -m services.cli.traces`: a collector in a process of its
    own (the benchmarks', so that receiving spans takes nothing from the load
    generator). Prints its endpoint, then, on SIGTERM, the spans it received."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # the server's threads inherit it
    with collector() as (servicer, endpoint):
        print(endpoint, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        print(sum(servicer.received.values()), flush=True)


if __name__ == "__main__":
    main()
