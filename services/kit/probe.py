"""Health of one service's process on its own port, through
`grpc.health.v1`: for the supervisor (`bmc up`) and, as
`python -m services.kit.probe NAME`, a container's health check in an ECS
task (exit 0 when SERVING, 1 otherwise)."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2

from services.kit.clients import direct_channel
from services.kit.settings import Settings, get_settings
from services.kit.topology import SERVICES, ServiceSpec


def health_of(settings: Settings, spec: ServiceSpec, replica: int = 0, timeout: float = 1.0) -> str:
    """`SERVING`, `NOT_SERVING`, or why the check failed, of one replica on its own port."""
    with direct_channel(settings, spec.name, replica) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = check(health_pb2.HealthCheckRequest(service=spec.full_name), timeout=timeout)
        except grpc.RpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SERVICES:
        sys.exit(f"usage: python -m services.kit.probe {{{','.join(SERVICES)}}}")
    settings = get_settings()
    state = health_of(settings, SERVICES[sys.argv[1]], settings.replica, timeout=2.0)
    print(state)
    sys.exit(0 if state == "SERVING" else 1)


if __name__ == "__main__":
    main()
