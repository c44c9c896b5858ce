"""Channels from one service (or the CLI) to another: mTLS when enabled,
retries of transient failures by gRPC's own retry policy, keepalive, and the
caller's credentials and trace context passed on."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from services.kit.pki import channel_credentials
from services.kit.settings import Settings
from services.kit.topology import SERVICES

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


def aio_channel(settings: Settings, service: str, client: str = "bmc-cli") -> grpc.aio.Channel:
    """An asyncio channel to `service`, identifying as `client` under mTLS."""
    target = SERVICES[service].target(settings)
    if settings.tls:
        return grpc.aio.secure_channel(target, channel_credentials(settings, client), options=channel_options(settings))
    return grpc.aio.insecure_channel(target, options=channel_options(settings))


def sync_channel(settings: Settings, service: str, client: str = "bmc-cli") -> grpc.Channel:
    """A blocking channel to `service` (CLI and supervisor)."""
    target = SERVICES[service].target(settings)
    if settings.tls:
        return grpc.secure_channel(target, channel_credentials(settings, client), options=channel_options(settings))
    return grpc.insecure_channel(target, options=channel_options(settings))


def bearer(token: str, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"), *extra)
