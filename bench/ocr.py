"""OCR figures: time per page for each path, and pages per minute through
the service with both cores busy.

In process, one engine: the QR code alone (zxing-cpp on a 150-dpi render),
a vector PDF (QR + text layer), and full Tesseract OCR of a scan without a
QR at 200 and at 300 dpi. Through the platform: 8 callers sending 200-dpi
scans to `ExtractInvoice` (the service reads with `BMC_OCR_ENGINES` engines
on threads), next to a no-op RPC on the same server.

    .venv/bin/python -m bench.ocr [--pages 6] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import zxingcpp

from bench.harness import drive, health, platform, summary, unary
from bmc.ocr.v1 import ocr_service_pb2
from services.kit.clients import aio_channel, bearer
from services.kit.settings import Settings
from services.kit.tokens import mint_token
from services.ocr.reading import Limits, TesseractPool, read
from services.ocr.samples import page_image, render_pdf, sample_invoices, scan


def per_page(pages: int) -> str:
    engines = TesseractPool(1)
    invoices = sample_invoices(pages * 3)
    with_qr = [i for i in invoices if i.with_qr][:pages]
    without_qr = [i for i in invoices if not i.with_qr][:pages]
    timings: dict[str, list[float]] = {}

    def timed(label: str, action: object) -> None:
        started = time.perf_counter()
        action()  # type: ignore[operator]
        timings.setdefault(label, []).append(time.perf_counter() - started)

    for invoice in with_qr:
        pdf = render_pdf(invoice)
        image = page_image(pdf, 150)
        timed("QR code only (zxing-cpp, 150-dpi page)", lambda image=image: zxingcpp.read_barcodes(image))
        timed("vector PDF: QR + text layer", lambda pdf=pdf: read(pdf, engines))
    for n, invoice in enumerate(without_qr):
        pdf = render_pdf(invoice)
        for dpi in (200, 300):
            content = scan(pdf, n, dpi)
            timed(
                f"scan without QR, full OCR at {dpi} dpi", lambda c=content, d=dpi: read(c, engines, Limits(ocr_dpi=d))
            )
    engines.close()
    return "\n".join(
        f"{label:<44} median {statistics.median(values) * 1000:7.0f} ms  ({len(values)} pages)"
        for label, values in timings.items()
    )


async def through_service(settings: Settings, seconds: float) -> str:
    channels = [aio_channel(settings, "ocr") for _ in range(2)]
    token = bearer(mint_token(settings, subject="bench", roles=["broker"], tenant="bench"))
    scans = [scan(render_pdf(i), n) for n, i in enumerate(sample_invoices(9)) if not i.with_qr]
    picks = iter(scans * 1000)

    def call(channel: object) -> object:
        rpc = unary(channel, "/bmc.ocr.v1.OcrService/ExtractInvoice", ocr_service_pb2.ExtractInvoiceRequest)  # type: ignore[arg-type]
        return lambda: rpc(ocr_service_pb2.ExtractInvoiceRequest(content=next(picks)), metadata=token, timeout=120)

    baseline = await drive("health check (no-op) [baseline]", health, channels, 8, 5)  # type: ignore[arg-type]
    result = await drive("ExtractInvoice, 200-dpi scans, 8 callers", call, channels, 8, seconds)  # type: ignore[arg-type]
    for channel in channels:
        await channel.close()
    return summary([baseline, result]) + f"\n= {result.rate * 60:.0f} pages per minute with both cores busy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(per_page(args.pages), flush=True)
    with platform(["ocr"]) as cluster:
        print(asyncio.run(through_service(cluster.settings, args.seconds)))


if __name__ == "__main__":
    main()
