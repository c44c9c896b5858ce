"""`run_service()`: everything a service process does besides its own RPCs.

Settings → logs and tracing → PostgreSQL (own database, migrated) and Redis
→ servicer → `grpc.aio` server with health, reflection and the interceptors
in their fixed order → serve until SIGTERM/SIGINT → drain and stop.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.dian import calendar
from services.kit import paging
from services.kit.auth import AuthenticationInterceptor, AuthorizationInterceptor, PeerInterceptor
from services.kit.background import cancel
from services.kit.database import Database, open_database
from services.kit.deadlines import DeadlineInterceptor
from services.kit.embedded import ensure_infrastructure
from services.kit.error_mapping import ErrorMappingInterceptor
from services.kit.events import Health
from services.kit.metrics import RpcSeries, serve_metrics, watch_pool
from services.kit.pki import CLIENTS, server_credentials
from services.kit.redis_connection import open_redis
from services.kit.settings import Settings, get_settings
from services.kit.telemetry import RpcStatsInterceptor, configure_logging, configure_tracing, server_interceptors
from services.kit.tokens import TokenVerifier
from services.kit.topology import PLATFORM_REFLECTION, SERVICES
from services.kit.validation import ValidationInterceptor

log = structlog.get_logger("bmc.server")


@dataclass
class Resources:
    """What a servicer is built from."""

    settings: Settings
    database: Database
    redis: aioredis.Redis
    health: Health  # sets a status of its own name in grpc.health.v1 (consumers, for one)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceDefinition:
    """How to build and register one service."""

    name: str
    migrations: Path
    build: Callable[[Resources], Awaitable[Any]]
    register: Callable[[Any, grpc.aio.Server], None]


def interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The fixed order: tracing (unless telemetry is off), the log line and
    metrics, the caller's deadline, (with mTLS) the client's identity,
    authentication, authorisation, request validation, error mapping
    (innermost, around the handler). Tracing comes first: its interceptor
    wraps the handler anew on every call it traces, which would defeat the
    wrapped-handler cache of any interceptor outside it."""
    peers: list[grpc.aio.ServerInterceptor] = (
        [PeerInterceptor(frozenset(SERVICES) | frozenset(CLIENTS))] if settings.tls else []
    )
    return [
        *server_interceptors(settings),
        RpcStatsInterceptor(RpcSeries() if settings.telemetry else None),
        DeadlineInterceptor(),
        *peers,
        AuthenticationInterceptor(TokenVerifier.from_settings(settings)),
        AuthorizationInterceptor(),
        ValidationInterceptor(),
        ErrorMappingInterceptor(),
    ]


async def _probe(database: Database, redis: aioredis.Redis) -> dict[str, str]:
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with database.pool.acquire() as connection:
                await connection.execute("SELECT 1")
    except Exception as exc:
        problems["postgresql"] = f"{type(exc).__name__}: {exc}"
    try:
        async with asyncio.timeout(2):
            await redis.ping()
    except Exception as exc:
        problems["redis"] = f"{type(exc).__name__}: {exc}"
    return problems


async def _watch_readiness(health_servicer: health.aio.HealthServicer, full_name: str, resources: Resources) -> None:
    """Health follows PostgreSQL and Redis: NOT_SERVING while either is unreachable."""
    previous: dict[str, str] | None = None
    while True:
        problems = await _probe(resources.database, resources.redis)
        status = health_pb2.HealthCheckResponse.NOT_SERVING if problems else health_pb2.HealthCheckResponse.SERVING
        for name in ("", full_name):
            await health_servicer.set(name, status)
        if problems != previous:
            if problems:
                log.warning("not ready", problems=problems)
            else:
                log.info("ready")
            previous = problems
        await asyncio.sleep(resources.settings.readiness_interval_seconds)


async def serve(definition: ServiceDefinition, settings: Settings) -> None:
    spec = SERVICES[definition.name]
    infra = await asyncio.to_thread(ensure_infrastructure, settings)
    paging.use_key(paging.key_from(settings.page_token_secret.get_secret_value(), settings.page_token_key_file))
    database = await open_database(settings, infra.database_url, definition.name, definition.migrations)
    watch_pool(database.pool)
    redis = open_redis(infra.redis_url)
    health_servicer = health.aio.HealthServicer()

    async def set_health(name: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await health_servicer.set(name, status)

    resources = Resources(settings=settings, database=database, redis=redis, health=set_health)
    servicer = await definition.build(resources)

    server = grpc.aio.server(
        interceptors=interceptors(settings),
        options=[
            # Several workers of a service share its port; a lone one must not
            # start silently on a port another server already holds.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    definition.register(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    described = [spec.full_name]
    if settings.mesh and definition.name == PLATFORM_REFLECTION:
        # Behind the edge the platform is one endpoint, whose reflection this
        # service answers: it describes all five (their descriptors are in gen/).
        described = [other.descriptor.full_name for other in SERVICES.values()]
    reflection.enable_server_reflection((*described, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    if settings.mesh:  # behind its sidecar: loopback only, the port of its replica
        from services.mesh.render import mesh_placement

        address = f"127.0.0.1:{mesh_placement(settings).app(definition.name, settings.replica)}"
    else:
        address = f"{settings.bind_host}:{spec.port(settings)}"
    if settings.tls:
        port = server.add_secure_port(address, server_credentials(settings, definition.name))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"{definition.name}: cannot listen on {address} (port in use?)")
    await server.start()
    metrics = serve_metrics(settings, spec.port_offset) if settings.telemetry else None
    log.info("listening", address=address, tls=settings.tls, embedded=infra.embedded, metrics_port=metrics)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_readiness(health_servicer, spec.full_name, resources))
    try:
        await stop.wait()
    finally:
        log.info("stopping", grace_seconds=settings.shutdown_grace_seconds)
        await health_servicer.enter_graceful_shutdown()
        await cancel(watcher)
        await server.stop(settings.shutdown_grace_seconds)
        for hook in resources.on_stop:
            await hook()
        await redis.aclose()
        await database.close()
        infra.close()
        log.info("stopped")


async def migrate_only(definition: ServiceDefinition, settings: Settings) -> None:
    """Creates the service's database if needed and brings it to the head
    of its migrations, then returns: the one-off task a deployment runs
    before rolling out a release (`python -m services.<name>.main --migrate`).
    Services also migrate at start, under an advisory lock, so a release
    whose migrations are additive needs no separate step."""
    infra = await asyncio.to_thread(ensure_infrastructure, settings)
    database = await open_database(settings, infra.database_url, definition.name, definition.migrations)
    await database.close()
    log.info("migrated", service=definition.name)


def run_service(definition: ServiceDefinition) -> None:
    """Entry point of a service's `main` (with `--migrate`: migrate, then exit)."""
    settings = get_settings()
    calendar.pin(settings.calendar_date)
    configure_logging(settings, definition.name)
    configure_tracing(settings, definition.name)
    # uvloop: the libuv event loop, markedly faster for asyncpg/redis/grpc I/O.
    uvloop.run(migrate_only(definition, settings) if "--migrate" in sys.argv[1:] else serve(definition, settings))
