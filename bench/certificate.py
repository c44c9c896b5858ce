"""Signed certificates per second, and where the time goes.

In process, one core: render (reportlab), seal (pikepdf metadata and
permissions) and sign (seal plus pyHanko's PAdES signature), per stage.
Through the platform: `IssueCertificate` re-issuing the certificates of
registered invoices from 8 concurrent callers (render and sign run in the
service's pool of `BMC_CERTIFICATE_RENDERERS` processes), next to a
no-op RPC on the same server; and the event pipeline: a batch of
registrations until every invoice has its certificate (commission, then
certificate, through Redis Streams).

    .venv/bin/python -m bench.certificate [--seconds 10] [--invoices 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.harness import drive, health, platform, summary, unary
from bmc.certificate.v1 import certificate_service_pb2
from bmc.invoice.v1 import invoice_service_pb2
from services.certificate.render import render
from services.certificate.sealing import Sealer, SigningKey, seal
from services.dian import calendar
from services.invoice.synth import invoices
from services.kit.clients import aio_channel, bearer
from services.kit.pki import DevPki
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from tests.integration.invoice_helpers import load_sample_catalog, registry
from tests.integration.test_certificate import Certificates
from tests.unit.test_certificate_document import issue


def stages(rounds: int = 20) -> str:
    with TemporaryDirectory() as tmp:
        pki = DevPki(Path(tmp))
        pki.identity("document-signer", "Bolsa Mercantil de Colombia S.A.")
        directory = pki.directory
        sealer = Sealer(
            SigningKey(directory / "document-signer.pem", directory / "document-signer-key.pem", (pki.ca_path,))
        )
        _, sheet = issue(sealer)  # warm-up: fonts, key
        timings = {}
        started = time.perf_counter()
        for _ in range(rounds):
            pdf = render(sheet)
        timings["render (reportlab)"] = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        for _ in range(rounds):
            seal(pdf, sheet.number, "x")
        timings["seal (pikepdf: XMP, AES-128 permissions)"] = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        for _ in range(rounds):
            signed = sealer.sign(pdf, sheet.number, "x")
        timings["sign (seal + pyHanko PAdES)"] = (time.perf_counter() - started) / rounds
    total = timings["render (reportlab)"] + timings["sign (seal + pyHanko PAdES)"]
    lines = [f"{name:<44} {seconds * 1000:7.1f} ms" for name, seconds in timings.items()]
    lines.append(f"{'one certificate, one core':<44} {total * 1000:7.1f} ms  = {1 / total:5.1f} certificates/s")
    lines.append(f"{'a signed certificate (storage sizing)':<44} {len(signed) / 1024:7.1f} KiB")
    return "\n".join(lines)


async def reissue(settings: Settings, names: list[str], seconds: float) -> str:
    channels = [aio_channel(settings, "certificate") for _ in range(2)]
    token = bearer(mint_token(settings, subject="bench", roles=["operator"]))
    picks = iter(names * 1000)

    def call(channel: object) -> object:
        rpc = unary(channel, "/bmc.certificate.v1.CertificateService/IssueCertificate",  # type: ignore[arg-type]
                    certificate_service_pb2.IssueCertificateRequest)  # fmt: skip
        return lambda: rpc(
            certificate_service_pb2.IssueCertificateRequest(invoice=next(picks), reissue=True),
            metadata=token,
            timeout=60,
        )

    baseline = await drive("health check (no-op) [baseline]", health, channels, 8, seconds)  # type: ignore[arg-type]
    issued = await drive("IssueCertificate (re-issue), 8 callers", call, channels, 8, seconds)  # type: ignore[arg-type]
    for channel in channels:
        await channel.close()
    return summary([baseline, issued])


def pipeline(settings: Settings, count: int) -> tuple[str, list[str]]:
    batch = invoice_service_pb2.BatchRegisterInvoicesRequest(
        requests=[
            invoice_service_pb2.RegisterInvoiceRequest(invoice=p)
            for p in invoices(count, calendar.today(), seed=5, prefix="CERT")
        ]
    )
    certificates = Certificates(settings)
    with registry(settings, tenant="bench") as reg:
        started = time.perf_counter()
        response = reg.BatchRegisterInvoices(batch, timeout=120)
        names = [r.invoice.name for r in response.results if r.invoice.name]
        while True:
            page = certificates.ListCertificates(
                certificate_service_pb2.ListCertificatesRequest(broker="brokers/bench", page_size=1000)
            )
            if len(page.certificates) >= len(names):
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    certificates.close()
    return (
        f"{len(names)} registrations → {len(names)} signed certificates through the streams: {elapsed:.1f} s, "
        f"{len(names) / elapsed:.1f} certificates/s end to end",
        names,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--invoices", type=int, default=200)
    args = parser.parse_args()
    print(stages(), flush=True)
    with platform(["product", "invoice", "commission", "certificate"]) as cluster:
        load_sample_catalog(cluster.settings)
        report, names = pipeline(cluster.settings, args.invoices)
        print(report, flush=True)
        print(asyncio.run(reissue(cluster.settings, names, args.seconds)))


if __name__ == "__main__":
    main()
