"""Wiring of the REST edge: `python -m services.gateway.main`."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
import uvloop
from aiohttp import web

from services.gateway.app import build_app
from services.gateway.upstream import Upstream
from services.kit.metrics import GATEWAY_OFFSET, serve_metrics
from services.kit.pki import server_ssl_context
from services.kit.settings import Settings, get_settings
from services.kit.telemetry import configure_logging, configure_tracing

log = structlog.get_logger("bmc.gateway")


async def serve(settings: Settings) -> None:
    upstream = Upstream(settings)
    app = build_app(settings, upstream)
    # aiohttp closes a connection whose request headers are not complete by
    # its keep-alive deadline: that deadline is the header read timeout.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
        keepalive_timeout=settings.gateway_read_timeout_seconds,
    )
    await runner.setup()
    # With BMC_TLS the edge speaks only HTTPS: tokens and client secrets never travel in the clear.
    tls = server_ssl_context(settings, "gateway") if settings.tls else None
    site = web.TCPSite(runner, settings.bind_host, settings.gateway_port, reuse_address=True, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        raise SystemExit(f"gateway: cannot listen on {settings.bind_host}:{settings.gateway_port} ({exc})") from exc
    scheme = "https" if settings.tls else "http"
    metrics = serve_metrics(settings, GATEWAY_OFFSET) if settings.telemetry else None
    log.info(
        "listening",
        address=f"{scheme}://{settings.bind_host}:{settings.gateway_port}",
        tls=settings.tls,
        metrics_port=metrics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await upstream.close()
        log.info("stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "gateway")
    configure_tracing(settings, "gateway")
    if settings.telemetry:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        AioHttpServerInstrumentor().instrument()  # every web.Application made from here on opens a server span
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
