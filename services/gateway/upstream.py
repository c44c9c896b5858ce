"""The gateway's side of gRPC: one channel per service, generic callables
per route built from descriptors, and the metadata an HTTP request carries
to the service (credentials, request id, trace context, deadline)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.gateway.routes import Route
from services.gateway.transcoding import TranscodeError, message_class
from services.kit.clients import UPSTREAM_HEADER, aio_channel
from services.kit.settings import Settings
from services.kit.telemetry import outgoing_metadata
from services.kit.topology import SERVICES

_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
METADATA_PREFIX = "grpc-metadata-"
# Headers that are not the caller's to set on the service side.
_RESERVED = frozenset({"authorization", "x-request-id", "traceparent", "tracestate", "grpc-timeout"})


def deadline_of(headers: Mapping[str, str], default: float, ceiling: float) -> float:
    """Seconds from `Grpc-Timeout` (gRPC's own format: `30S`, `500m`), else the default."""
    text = headers.get("grpc-timeout")
    if text is None:
        return default
    match = _TIMEOUT.match(text.strip())
    if not match:
        raise TranscodeError(
            "Grpc-Timeout", "INVALID_TIMEOUT", f"Grpc-Timeout {text!r} must be digits and a unit H M S m u n (30S)"
        )
    return min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], ceiling)


def call_metadata(headers: Mapping[str, str], peer: str | None) -> list[tuple[str, str]]:
    """grpc-gateway's conventions: Authorization as is, `Grpc-Metadata-*`
    without the prefix, the client's address in X-Forwarded-For; plus the
    request id and trace context of this request."""
    metadata = list(outgoing_metadata())
    authorization = headers.get("authorization")
    if authorization:
        metadata.append(("authorization", authorization))
    for key, value in headers.items():
        lowered = key.lower()
        if lowered.startswith(METADATA_PREFIX):
            name = lowered.removeprefix(METADATA_PREFIX)
            if name and name not in _RESERVED and not name.startswith("grpc-") and not name.endswith("-bin"):
                metadata.append((name, value))
    forwarded = headers.get("x-forwarded-for")
    if peer:
        metadata.append(("x-forwarded-for", f"{forwarded}, {peer}" if forwarded else peer))
    if "host" in headers:
        metadata.append(("x-forwarded-host", headers["host"]))
    if "user-agent" in headers:
        metadata.append(("grpcgateway-user-agent", headers["user-agent"]))
    return metadata


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self._channels = {name: aio_channel(settings, name, client="gateway") for name in SERVICES}
        self._callables: dict[str, Any] = {}

    def callable(self, route: Route) -> Any:
        found = self._callables.get(route.grpc_path)
        if found is not None:
            return found
        channel = self._channels[route.service]
        serialize = message_class(route.method.input_type).SerializeToString
        deserialize = message_class(route.method.output_type).FromString
        factory: Any
        if route.streams_request and route.streams_response:
            factory = channel.stream_stream
        elif route.streams_request:
            factory = channel.stream_unary
        elif route.streams_response:
            factory = channel.unary_stream
        else:
            factory = channel.unary_unary
        found = factory(route.grpc_path, request_serializer=serialize, response_deserializer=deserialize)
        self._callables[route.grpc_path] = found
        return found

    async def readiness(self) -> dict[str, str]:
        """Each service's health, as `SERVING` or what went wrong."""

        async def check(name: str) -> str:
            probe = self._channels[name].unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            try:
                response = await probe(
                    health_pb2.HealthCheckRequest(service=SERVICES[name].full_name),
                    timeout=1.0,
                    metadata=((UPSTREAM_HEADER, name),),  # in the mesh, which service the sidecar asks
                )
            except grpc.aio.AioRpcError as exc:
                return f"UNREACHABLE ({exc.code().name})"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

        names = list(self._channels)
        results = await asyncio.gather(*(check(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
