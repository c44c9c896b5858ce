"""`bmc demo`: the platform's main job, end to end, on real processes.

Each service issue adds its part of the flow (catalog → invoices →
commissions → certificates, OCR of a scan): the platform starts and proves
its security chain, loads a catalog, shows the mesh surviving a killed
product replica and refusing what its RBAC forbids, registers a file of invoices, charges
their commissions from the event stream, settles the month, collects the
signed certificate of every invoice, reads invoices from a PDF, a scan and
a photo, follows one registration as one trace from the REST edge to its
certificate, and ends with what Prometheus saw of it all (`bmc status`):
each registration counted, the consumers' lag back to 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from bmc.product.v1 import product_pb2, product_service_pb2, product_service_pb2_grpc
from services.cli import status as status_view
from services.cli.app import status_table
from services.cli.cluster import Cluster, ClusterError, rest_url
from services.cli.commissions import ensure_uvt
from services.cli.demo_mesh import mesh_step
from services.cli.observe import Prometheus
from services.cli.traces import REGISTRATION_HOPS, Collector, Trace, collector
from services.dian import calendar
from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from services.mesh.access import edge_ssl_context


@dataclass
class Check:
    step: str
    expected: str
    observed: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.expected == self.observed


def _call(action: object) -> tuple[str, str]:
    try:
        action()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def security_checks(settings: Settings) -> list[Check]:
    """The interceptor chain, seen from a client: no token, wrong role, bad input."""
    operator = mint_token(settings, subject="demo-operator", roles=["operator"])
    broker = mint_token(settings, subject="demo-broker", roles=["broker"], tenant="acme")
    with sync_channel(settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        get = product_service_pb2.GetProductRequest(name="products/MAIZ-AMARILLO")
        create = product_service_pb2.CreateProductRequest(
            product=product_pb2.Product(display_name="Maíz amarillo"), product_id="MAIZ-AMARILLO"
        )
        checks = []
        code, detail = _call(lambda: stub.GetProduct(get, timeout=5))
        checks.append(Check("call without a token", "UNAUTHENTICATED", code, detail))
        code, detail = _call(lambda: stub.CreateProduct(create, metadata=bearer(broker), timeout=5))
        checks.append(Check("broker creates a product (operator-only)", "PERMISSION_DENIED", code, detail))
        bad = product_service_pb2.GetProductRequest(name="items/not a code")
        code, detail = _call(lambda: stub.GetProduct(bad, metadata=bearer(operator), timeout=5))
        checks.append(Check("malformed product name", "INVALID_ARGUMENT", code, detail))
    return checks


SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DEMO_CATALOG_SIZE = 50_000


def catalog_step(cluster: Cluster, out: Path, console: Console) -> dict[str, object]:
    """Import the sample commodities and a synthetic catalog, then look some up."""
    from services.cli.products import import_summary, stage_for_import, wait_for_import
    from services.product.synth import write_shards

    settings = cluster.settings
    synthetic = write_shards(out / "catalog", DEMO_CATALOG_SIZE, "csv", shards=2, compress=True)
    files = [SAMPLES / "catalog" / "commodities.csv", *synthetic]
    token = bearer(mint_token(settings, subject="demo-operator", roles=["operator"]))
    started = time.monotonic()
    with sync_channel(settings, "product") as channel:
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        operation = stub.ImportProducts(
            product_service_pb2.ImportProductsRequest(uris=stage_for_import(settings, [str(f) for f in files])),
            metadata=token,
            timeout=30,
        )
        operation = wait_for_import(stub, token, operation)
        seconds = time.monotonic() - started
        console.print(import_summary(operation, seconds))
        wanted = ["MAIZ-AMARILLO", "CAFE-PERGAMINO", "NOVILLO-GORDO", "AZUCAR-REFINADA", "P0000012345", "NO-EXISTE"]
        found = stub.BatchGetProducts(
            product_service_pb2.BatchGetProductsRequest(names=[f"products/{c}" for c in wanted]),
            metadata=token,
            timeout=10,
        )
    result = product_pb2.ImportProductsResponse()
    operation.response.Unpack(result)
    table = Table(title="catalog lookups (BatchGetProducts)")
    for column in ("code", "name", "category", "eligible"):
        table.add_column(column)
    for p in found.products:
        table.add_row(p.code, p.display_name, product_pb2.Category.Name(p.category), "yes" if p.eligible else "no")
    console.print(table)
    console.print(f"not in the catalog: {', '.join(found.missing)}")
    return {
        "files": [str(f) for f in files],
        "rows_read": result.rows_read,
        "inserted": result.inserted,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
        "seconds": round(seconds, 2),
        "lookups": {p.code: {"name": p.display_name, "eligible": p.eligible} for p in found.products},
        "missing": list(found.missing),
        "ok": result.rows_read == DEMO_CATALOG_SIZE + 18
        and len(found.products) == 5
        and list(found.missing) == ["products/NO-EXISTE"],
    }


DEMO_INVOICES = 40


def invoice_step(cluster: Cluster, out: Path, console: Console) -> dict[str, object]:
    """Register a file of invoices (two of them wrong on purpose) as a broker's
    back office would, then prove the event chain intact and the events out."""

    import redis

    from bmc.invoice.v1 import invoice_service_pb2, invoice_service_pb2_grpc
    from services.cli.invoices import import_file, report_table
    from services.invoice.synth import invoices, to_csv
    from services.kit.events import stream_name

    settings = cluster.settings
    today = calendar.today()
    batch = list(invoices(DEMO_INVOICES, today, seed=int(time.time()) % 997))
    batch[3].seller.id.check_digit = str((int(batch[3].seller.id.check_digit) + 1) % 10)  # a typo in the DV
    batch[7].lines[0].product_code = "AZUCAR-REFINADA"  # industrial sugar: not eligible
    path = out / "invoices.csv"
    path.write_bytes(to_csv(batch))
    operator = bearer(mint_token(settings, subject="demo-backoffice", roles=["operator"]))
    with sync_channel(settings, "invoice") as channel:
        stub = invoice_service_pb2_grpc.InvoiceServiceStub(channel)
        report = import_file(stub, operator, path.read_bytes(), path.name, "brokers/demo")
        console.print(report_table(path.name, report, only_rejected=True))
        chain = stub.VerifyEventChain(invoice_service_pb2.VerifyEventChainRequest(), metadata=operator, timeout=60)
        first = next(d.invoice for d in report.documents if d.invoice)
        history = stub.ListInvoiceEvents(
            invoice_service_pb2.ListInvoiceEventsRequest(parent=first), metadata=operator, timeout=10
        )
        registered = stub.GetInvoice(invoice_service_pb2.GetInvoiceRequest(name=first), metadata=operator, timeout=10)
    assert cluster.infrastructure is not None
    events = redis.Redis.from_url(cluster.infrastructure.redis_url)
    deadline = time.monotonic() + 10
    while (published := events.xlen(stream_name(settings.redis_prefix, "invoice"))) < chain.events_checked:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the outbox relay publishes asynchronously
    console.print(
        f"event chain: {'[green]intact[/]' if chain.intact else '[red]BROKEN[/]'} ({chain.events_checked} events); "
        f"{published} events published on {stream_name(settings.redis_prefix, 'invoice')}; "
        f"example: {registered.registration_number} ({registered.name}), event hash {history.events[0].hash[:16]}…"
    )
    rejected = {d.number: [i.reason for i in d.issues] for d in report.documents if d.issues}
    return {
        "file": str(path),
        "registered": report.registered,
        "invoices": [d.invoice for d in report.documents if d.invoice],
        "rejected": rejected,
        "chain_intact": chain.intact,
        "events_checked": chain.events_checked,
        "events_published": published,
        "example": {"name": registered.name, "registration_number": registered.registration_number},
        "ok": report.registered == DEMO_INVOICES - 2
        and set(rejected) == {batch[3].number, batch[7].number}
        and chain.intact
        and published >= report.registered,
    }


def commission_step(cluster: Cluster, out: Path, console: Console, invoices: list[str]) -> dict[str, object]:
    """Wait for the commission of every registered invoice (computed from the
    stream), show one breakdown, then settle the month and export it."""
    import hashlib

    from bmc.commission.v1 import commission_service_pb2, commission_service_pb2_grpc
    from services.cli.commissions import settle, settlement_table

    settings = cluster.settings
    operator = bearer(mint_token(settings, subject="demo-backoffice", roles=["operator"]))
    with sync_channel(settings, "commission") as channel:
        stub = commission_service_pb2_grpc.CommissionServiceStub(channel)
        listing = commission_service_pb2.ListCommissionsRequest(broker="brokers/demo", page_size=1000)
        registered, mine = len(invoices), set(invoices)
        deadline = time.monotonic() + 30
        while True:
            page = stub.ListCommissions(listing, metadata=operator, timeout=10).commissions
            charged = [c for c in page if c.invoice in mine]  # earlier demo runs may have left others
            if len(charged) >= registered or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        example = charged[0] if charged else None
        if example is not None:
            b = example.breakdown
            console.print(f"commission of {example.invoice} ({b.tariff_schedule}, rule {b.rule}):")
            for line in b.explanation:
                console.print(f"  {line}")
            console.print(
                f"  withholding avoided (estimate): {example.withholding.amount} COP — {example.withholding.rule}"
            )
        period = f"{calendar.today():%Y-%m}"
        settlement = settle(stub, operator, period)
        console.print(settlement_table(settlement))
        exports = {}
        for kind, suffix in (
            (commission_service_pb2.EXPORT_FORMAT_CSV, "csv"),
            (commission_service_pb2.EXPORT_FORMAT_JSON, "json"),
        ):
            body = stub.ExportSettlement(
                commission_service_pb2.ExportSettlementRequest(name=settlement.name, format=kind),
                metadata=operator,
                timeout=60,
            )
            path = out / f"settlement-{period}.{suffix}"
            path.write_bytes(body.data)
            exports[suffix] = body.data
    hash_matches = hashlib.sha256(exports["json"]).hexdigest() == settlement.content_hash
    verdict = "[green]matches[/]" if hash_matches else "[red]differs[/]"
    console.print(
        f"{len(charged)} commissions for {registered} registrations; settlement exported to "
        f"{out / f'settlement-{period}.csv'} and .json (content hash {verdict})"
    )
    demo_line = next((line for line in settlement.by_broker if line.key == "brokers/demo"), None)
    return {
        "commissions": len(charged),
        "example": {"invoice": example.invoice, "total": example.breakdown.total} if example else None,
        "settlement": settlement.name,
        "settlement_total": settlement.total.total,
        "content_hash": settlement.content_hash,
        "ok": len(charged) == registered
        and hash_matches
        and demo_line is not None
        and demo_line.invoice_count >= registered,  # earlier demo runs count too
    }


def certificate_step(cluster: Cluster, out: Path, console: Console, invoices: list[str]) -> dict[str, object]:
    """Wait for the signed certificate of every charged invoice (issued from
    the commission stream), save them under out/certificates/, and check one
    as a third party would: by its code, anonymously."""
    import hashlib

    from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2, certificate_service_pb2_grpc

    settings = cluster.settings
    operator = bearer(mint_token(settings, subject="demo-backoffice", roles=["operator"]))
    folder = out / "certificates"
    folder.mkdir(parents=True, exist_ok=True)
    with sync_channel(settings, "certificate") as channel:
        stub = certificate_service_pb2_grpc.CertificateServiceStub(channel)
        listing = certificate_service_pb2.ListCertificatesRequest(broker="brokers/demo", page_size=1000)
        registered, mine = len(invoices), set(invoices)
        deadline = time.monotonic() + 120
        with console.status("waiting for the signed certificates..."):
            while True:
                page = stub.ListCertificates(listing, metadata=operator, timeout=10).certificates
                issued = [c for c in page if c.invoice in mine]  # earlier demo runs may have left others
                if len(issued) >= registered or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        intact = 0
        for certificate in issued:
            request = certificate_service_pb2.DownloadCertificateRequest(name=certificate.name)
            pdf = b"".join(c.data for c in stub.DownloadCertificate(request, metadata=operator, timeout=30))
            (folder / f"{certificate.number}.pdf").write_bytes(pdf)
            intact += hashlib.sha256(pdf).hexdigest() == certificate.sha256
        example = issued[0] if issued else None
        verified = None
        if example is not None:
            # Anyone holding the paper can check it: no token at all.
            verified = stub.VerifyCertificate(
                certificate_service_pb2.VerifyCertificateRequest(code=example.verification_code), timeout=10
            )
            state = certificate_pb2.CertificateState.Name(verified.state).removeprefix("CERTIFICATE_STATE_")
            console.print(
                f"certificate {example.number} for invoice {verified.facts.invoice_number}: code "
                f"{example.verification_code} verifies as [green]{state}[/] (anonymous check); "
                f"{example.verification_url}"
            )
    console.print(f"{len(issued)} signed certificates for {registered} registrations saved in {folder}")
    return {
        "certificates": len(issued),
        "saved": str(folder),
        "files_match_their_hash": intact,
        "example": {"number": example.number, "code": example.verification_code} if example else None,
        "ok": len(issued) == registered
        and intact == registered
        and verified is not None
        and verified.state == certificate_pb2.CERTIFICATE_STATE_VALID,
    }


def ocr_step(cluster: Cluster, out: Path, console: Console) -> dict[str, object]:
    """Read three invoices the way they reach a back office — a PDF, a 200-dpi
    scan without a QR code, a phone photo — and compare with what they say."""
    from services.cli.ocr import read_files
    from services.ocr.samples import photo, render_pdf, sample_invoices, scan

    folder = out / "ocr"
    folder.mkdir(parents=True, exist_ok=True)
    invoices = sample_invoices(3)
    files = []
    for n, (invoice, kind) in enumerate(zip(invoices, ("pdf", "scan", "photo"), strict=True)):
        pdf = render_pdf(invoice)
        content = {"pdf": pdf, "scan": scan(pdf, n), "photo": photo(pdf, n)}[kind]
        path = folder / f"{invoice.number}.{ {'pdf': 'pdf', 'scan': 'png', 'photo': 'jpg'}[kind] }"
        path.write_bytes(content)
        files.append(path)
    extractions = read_files(cluster.settings, files)
    keys = ("number", "issue_date", "seller_nit", "buyer_id", "subtotal", "vat", "total", "cufe")
    right = total = 0
    for invoice, extraction in zip(invoices, extractions, strict=True):
        found = {f.field: f.value for f in extraction.fields}
        expected = invoice.expected()
        right += sum(found.get(k) == expected[k] for k in keys)
        total += len(keys)
    console.print(f"OCR: {right}/{total} key fields read right from a PDF, a scan and a photo (files in {folder})")
    # What Tesseract read and nothing checked waits for a person before any registration.
    held = {kind: list(e.fields_to_confirm) for kind, e in zip(("pdf", "scan", "photo"), extractions, strict=True)}
    for kind, fields in held.items():
        if fields:
            console.print(f"  {kind}: {', '.join(fields)} held for a person's confirmation before registering")
    return {
        "files": [str(f) for f in files],
        "fields_right": right,
        "fields": total,
        "held_for_confirmation": held,
        "ok": right >= 0.9 * total,
    }


def _http(
    settings: Settings, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    context = edge_ssl_context(settings) if settings.mesh else None
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rest_step(cluster: Cluster, out: Path, console: Console, code: str) -> dict[str, object]:
    """The REST edge as an ERP and a DIAN auditor use it: a token from
    /oauth/token, invoices listed over REST, a scan uploaded for OCR, the
    certificate checked anonymously (JSON and the Spanish HTML page), and the
    OpenAPI document saved."""
    from services.gateway.oauth import ClientRegistry
    from services.ocr.samples import render_pdf, sample_invoices

    settings = cluster.settings
    base = rest_url(settings)
    clients = ClientRegistry(cluster.settings.auth_dir / "clients.json")
    clients.remove("demo-erp")
    secret = clients.add("demo-erp", ["broker"], tenant="demo", description="bmc demo")
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": "demo-erp", "client_secret": secret}
    ).encode()
    status, body = _http(
        settings, "POST", f"{base}/oauth/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    token = json.loads(body).get("access_token", "") if status == 200 else ""
    auth = {"Authorization": f"Bearer {token}"}
    _, listed = _http(settings, "GET", f"{base}/v1/invoices?state=INVOICE_STATE_CERTIFIED&pageSize=1000", headers=auth)
    certified = len(json.loads(listed).get("invoices", []))
    sample = sample_invoices(1)[0]
    upload_status, extraction = _http(
        settings, "POST", f"{base}/v1/extractions:upload?filename=scan.pdf", render_pdf(sample),
        {**auth, "Content-Type": "application/pdf"},
    )  # fmt: skip
    draft_number = json.loads(extraction).get("draft", {}).get("number", "") if upload_status == 200 else ""
    _, verified = _http(settings, "GET", f"{base}/v1/verifications/{code}")
    state = json.loads(verified).get("state", "")
    page_status, page = _http(settings, "GET", f"{base}/verify/{code}")
    (out / "verify.html").write_bytes(page)
    _, document = _http(settings, "GET", f"{base}/openapi.json")
    (out / "openapi.json").write_bytes(document)
    operations = sum(len(item) for item in json.loads(document)["paths"].values())
    console.print(
        f"REST edge {base}: token from /oauth/token {'ok' if token else 'FAILED'}; {certified} certified invoices "
        f"listed; OCR upload read invoice {draft_number or '?'}; certificate {code} is {state} "
        f"(page /verify/{code}: HTTP {page_status}); OpenAPI with {operations} operations in {out / 'openapi.json'}"
    )
    return {
        "gateway": base,
        "token": bool(token),
        "certified_invoices_listed": certified,
        "ocr_upload_number": draft_number,
        "verification_state": state,
        "openapi_operations": operations,
        "ok": bool(token)
        and certified > 0
        and draft_number == sample.number
        and state == "CERTIFICATE_STATE_VALID"
        and page_status == 200
        and "Certificado válido" in page.decode(),
    }


def security_table(checks: list[Check]) -> Table:
    table = Table(title="security chain")
    for column in ("step", "expected", "observed", "detail"):
        table.add_column(column)
    for c in checks:
        colour = "green" if c.passed else "red"
        table.add_row(c.step, c.expected, f"[{colour}]{c.observed}[/]", c.detail)
    return table


def observability_step(observer: Prometheus | None, console: Console, registered: int) -> dict[str, object]:
    """What Prometheus saw of the run: the registrations it counted (the
    number registered), the consumers' lag back to 0, and `bmc status`."""
    if observer is None:
        console.print("[yellow]Prometheus is not installed (`make setup` installs it): no metrics shown[/]")
        return {"ok": True, "skipped": "prometheus not installed"}
    counted: float | None = None
    lags: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = observer.query('sum(bmc_invoice_registrations_total{outcome="accepted"})')
        counted = float(found[0]["value"][1]) if found else None
        lags = {
            f"{s['metric']['group']} from {s['metric']['stream']}": float(s["value"][1])
            for s in observer.query(status_view.LAG)
        }
        if counted == registered and lags and not any(lags.values()):
            break
        time.sleep(2)
    snapshot = status_view.take(observer)
    console.print(status_view.render(snapshot))
    console.print(
        f"Prometheus counted {counted:.0f} registrations for {registered} registered; consumer lag "
        + ", ".join(f"{group} {lag:.0f}" for group, lag in lags.items())
    )
    return {
        "ok": counted == registered and bool(lags) and not any(lags.values()),
        "registrations_counted": counted,
        "registered": registered,
        "lag": lags,
        "firing": snapshot.firing,
    }


def trace_step(cluster: Cluster, sink: Collector | None, console: Console) -> dict[str, object]:
    """One registration followed as one trace: sent over REST in a trace the
    demo begins, through the invoice service and its product lookup, over the
    invoice stream to the commission consumer and over the commission stream
    to the certificate consumer, from the spans each process exported."""
    from google.protobuf import json_format

    from services.invoice.synth import invoices

    if sink is None:
        console.print("[yellow]BMC_OTLP_ENDPOINT names another collector: the trace is there, not shown here[/]")
        return {"ok": True, "registered": 0, "skipped": "spans exported to BMC_OTLP_ENDPOINT"}
    settings = cluster.settings
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    sink.watch(trace_id)
    document = next(invoices(1, calendar.today(), seed=int(time.time()) % 997, prefix="TRAZA"))
    token = mint_token(settings, subject="demo-erp", roles=["broker"], tenant="demo")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(json_format.MessageToDict(document)).encode()
    url = f"{rest_url(settings)}/v1/invoices"
    status, _ = _http(settings, "POST", url, body, {**headers, "traceparent": f"00-{trace_id}-{caller}-01"})
    trace = Trace([])
    deadline = time.monotonic() + 60
    while status == 200 and time.monotonic() < deadline:
        trace = Trace(sink.spans(trace_id))
        if trace.complete(REGISTRATION_HOPS, caller):
            break
        time.sleep(0.5)
    chain = [part for part in REGISTRATION_HOPS if trace.find(*part)]
    statements = [s for s in trace.spans if "db.system" in s.attributes]
    console.print(trace.tree(hide=lambda span: "db.system" in span.attributes))
    console.print(
        f"one registration, one trace: {len(trace.spans)} spans in {len({s.service for s in trace.spans})} processes "
        f"({len(statements)} of them SQL statements and Redis commands, not shown); "
        f"{len(chain)} of the {len(REGISTRATION_HOPS)} hops from the edge to the certificate"
    )
    return {
        "ok": status == 200 and trace.complete(REGISTRATION_HOPS, caller),
        "registered": int(status == 200),
        "trace_id": trace_id,
        "spans": len(trace.spans),
        "services": sorted({s.service for s in trace.spans}),
        "hops": [f"{service} {name}" for service, _, name in chain],
    }


def run_demo(settings: Settings, out: Path, console: Console) -> bool:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        sink: Collector | None = None
        if not settings.otlp_endpoint:  # the demo collects the spans itself, to show one registration's trace
            sink, endpoint = stack.enter_context(collector())
            settings = settings.model_copy(update={"otlp_endpoint": endpoint})
            os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")  # the services export every second, not five
        return _run(settings, out, console, sink, started)


def _run(settings: Settings, out: Path, console: Console, sink: Collector | None, started: float) -> bool:
    cluster = Cluster(settings)
    observer: Prometheus | None = None
    try:
        with console.status("starting the platform..."):
            try:
                cluster.start()
            except ClusterError as exc:
                console.print(f"[red]cannot start the platform:[/] {exc}")
                return False
        if shutil.which("prometheus"):  # watching the whole run, as `bmc up --observe` does
            observer = Prometheus(cluster.settings, cluster.scrape_targets())
            observer.start()
        statuses = cluster.statuses()
        console.print(status_table(statuses, f"platform up in {time.monotonic() - started:.1f}s"))
        checks = security_checks(cluster.settings)
        console.print(security_table(checks))
        if provisional := ensure_uvt(cluster.settings, calendar.today().year):
            console.print(f"[yellow]reference data ends before this year; recorded {provisional}[/]")
        catalog = catalog_step(cluster, out, console)
        meshed = mesh_step(cluster, console)
        registrations = invoice_step(cluster, out, console)
        invoices = list(registrations["invoices"])  # type: ignore[call-overload]
        charges = commission_step(cluster, out, console, invoices)
        signed = certificate_step(cluster, out, console, invoices)
        read = ocr_step(cluster, out, console)
        example = signed.get("example")
        rest = rest_step(cluster, out, console, str(example["code"])) if isinstance(example, dict) else {"ok": False}
        traced = trace_step(cluster, sink, console)
        registered = int(registrations["registered"]) + int(traced["registered"])  # type: ignore[call-overload]
        observed = observability_step(observer, console, registered)
    finally:
        if observer is not None:
            observer.stop()
        cluster.stop()

    healthy = all(s.health == "SERVING" for s in statuses)
    ok = (
        healthy
        and all(c.passed for c in checks)
        and all(
            bool(step["ok"]) for step in (catalog, meshed, registrations, charges, signed, read, rest, traced, observed)
        )
    )
    summary = {
        "ok": ok,
        "services": [{**asdict(s), "log": str(s.log)} for s in statuses],
        "security_checks": [{**asdict(c), "passed": c.passed} for c in checks],
        "catalog": catalog,
        "mesh": meshed,
        "invoices": registrations,
        "commissions": charges,
        "certificates": signed,
        "ocr": read,
        "rest": rest,
        "trace": traced,
        "observability": observed,
        "seconds": round(time.monotonic() - started, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    console.print(f"summary written to {out / 'summary.json'}", style="bold green" if ok else "bold red")
    return ok
