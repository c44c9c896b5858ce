"""Channels from one service (or the CLI) to another: mTLS when enabled,
retries of transient failures by gRPC's own retry policy, keepalive, and the
caller's credentials and trace context passed on."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from services.kit.pki import channel_credentials
from services.kit.settings import Settings
from services.kit.telemetry import client_interceptors
from services.kit.topology import SERVICES

CLI = "bmc-cli"  # the identity of callers from outside the platform (the bmc command, tests)
IDEMPOTENCY_HEADER = "x-bmc-request-id"  # see mesh/README.md: which calls the mesh may retry
UPSTREAM_HEADER = "x-bmc-upstream"  # which service a health check through the mesh is for

# gRPC-native retries (gRFC A6): only statuses that mean "not processed".
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel_options(settings: Settings) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        # Reconnect to a restarted peer within half a second (gRPC's default back-off grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 500),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]


def _mesh_options(settings: Settings) -> list[tuple[str, object]]:
    # The mesh retries what the contract allows, within its budget; the client
    # retrying too would multiply the attempts a breaker just refused.
    options = [o for o in channel_options(settings) if o[0] not in ("grpc.service_config", "grpc.enable_retries")]
    return [*options, ("grpc.enable_retries", 0)]


def _mesh_entry(settings: Settings, client: str) -> tuple[str, grpc.ChannelCredentials | None]:
    """Where `client` enters the mesh: a workload (a service, the gateway)
    through its own sidecar's outbound listener, plaintext on loopback; the
    CLI and other outside callers through the edge, with an operator's
    certificate. Both route by RPC."""
    # The mesh renders from the kit's topology: imported here, not at the top.
    from services.mesh.access import edge_credentials, edge_grpc_target
    from services.mesh.render import mesh_placement

    if client == CLI:
        return edge_grpc_target(settings), edge_credentials(settings)
    return f"127.0.0.1:{mesh_placement(settings).outbound(client, settings.replica)}", None


Route = tuple[str, grpc.ChannelCredentials | None, list[tuple[str, object]]]  # target, credentials, options


def _route(settings: Settings, service: str, client: str) -> Route:
    """Where a channel of `client` to `service` goes, with what credentials and options."""
    if settings.mesh:
        target, credentials = _mesh_entry(settings, client)
        return target, credentials, _mesh_options(settings)
    credentials = channel_credentials(settings, client) if settings.tls else None
    return SERVICES[service].target(settings), credentials, channel_options(settings)


def aio_channel(settings: Settings, service: str, client: str = CLI) -> grpc.aio.Channel:
    """An asyncio channel to `service`, identifying as `client`."""
    target, credentials, options = _route(settings, service, client)
    interceptors = client_interceptors(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def sync_channel(settings: Settings, service: str, client: str = CLI) -> grpc.Channel:
    """A blocking channel to `service` (the CLI, tests)."""
    target, credentials, options = _route(settings, service, client)
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def direct_channel(settings: Settings, service: str, replica: int = 0) -> grpc.Channel:
    """A blocking channel to one replica's own port, bypassing the mesh (the
    supervisor's health checks, as a container health check runs in its task)."""
    if not settings.mesh:
        return sync_channel(settings, service)
    from services.mesh.render import mesh_placement

    return grpc.insecure_channel(f"127.0.0.1:{mesh_placement(settings).app(service, replica)}")


def keyed(request: object) -> tuple[tuple[str, str], ...]:
    """Metadata saying a mutation carries its idempotency key: the mesh may
    retry it then (the same key returns the same result), never otherwise."""
    request_id = getattr(request, "request_id", "")
    if not isinstance(request_id, str) or not request_id:
        return ()
    # Metadata values are printable ASCII; only the header's presence matters to the mesh.
    return ((IDEMPOTENCY_HEADER, request_id if request_id.isascii() and request_id.isprintable() else "set"),)


def bearer(token: str, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"), *extra)
