"""The mesh spec as Envoy bootstraps: one per sidecar (each replica of each
service, and the REST gateway's) and one for the edge, for a `Placement`
(this machine, or AWS). The two placements differ only in addresses and in
where certificates come from.

A sidecar has an inbound listener (mutual TLS 1.3 from identities of the
mesh; RBAC from the spec: a caller reaches only the RPCs it is allowed;
the caller's identity forwarded in `x-forwarded-client-cert`) in front of
its service, and an outbound listener (plaintext on loopback) through which
its service reaches the others: one route per allowed RPC, with the
service's timeout, retries only for what may be retried, and clusters with
circuit breakers, outlier detection, active gRPC health checks and load
balancing across replicas. Certificates come through SDS from watched
files, so re-issuing them changes them without a restart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import MethodDescriptor

from services.kit.clients import IDEMPOTENCY_HEADER, UPSTREAM_HEADER
from services.kit.settings import Settings
from services.kit.topology import PLATFORM_REFLECTION, SERVICES
from services.mesh.spec import MeshSpec, Policy, methods, retryable

Json = dict[str, Any]
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
_MAX_HEADERS_KB = 4096
_H2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        # A refusal may carry a BadRequest with a violation per field of a large
        # request in its trailers, far beyond Envoy's default 60 KiB of headers.
        "common_http_protocol_options": {"max_response_headers_kb": _MAX_HEADERS_KB},
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
_UNBUFFERED = {
    "envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "disabled": True,
    }
}
# Open to every identity of the mesh: health checks and reflection.
_INFRASTRUCTURE = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")  # fmt: skip


@dataclass(frozen=True)
class Placement:
    """Where things listen and where certificates are, for one deployment."""

    name: str  # "local" or "aws"
    inbound: Callable[[str, int], tuple[str, int]]  # (service, replica) -> address other sidecars dial
    bind_inbound: Callable[[str, int], tuple[str, int]]  # ... and where that sidecar binds it
    app: Callable[[str, int], int]  # the service's own port, on loopback
    outbound: Callable[[str, int], int]  # the sidecar's egress port, on loopback
    admin: Callable[[str, int], int]
    certificates: Callable[[str], Path]  # identity -> directory of cert.pem, key.pem, ca.pem
    dns: bool  # upstreams are DNS names (a service's replicas behind one name) rather than addresses
    edge_rest: tuple[str, int]
    edge_grpc: tuple[str, int]
    gateway: tuple[str, int]  # the REST gateway, as the edge reaches it
    # Proxies in front of the edge that append to X-Forwarded-For (AWS: API
    # Gateway's VPC link, then the load balancer); the caller is that many
    # entries from the right.
    edge_trusted_hops: int = 0


def _address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _sds(name: str, directory: Path) -> Json:
    """A secret loaded from a file Envoy watches (`<name>.sds.json` in `directory`)."""
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {
                "path": str(directory / f"{name}.sds.json"),
                "watched_directory": {"path": str(directory)},
            },
            "resource_api_version": "V3",
        },
    }


def sds_files(directory: Path) -> dict[str, Json]:
    """The SDS files of an identity's directory: its certificate and the trusted CA."""
    secret = f"{_TLS}.Secret"
    return {
        "identity.sds.json": {
            "resources": [
                {
                    "@type": secret,
                    "name": "identity",
                    "tls_certificate": {
                        "certificate_chain": {"filename": str(directory / "cert.pem")},
                        "private_key": {"filename": str(directory / "key.pem")},
                    },
                }
            ]
        },
        "trusted_ca.sds.json": {
            "resources": [
                {
                    "@type": secret,
                    "name": "trusted_ca",
                    "validation_context": {"trusted_ca": {"filename": str(directory / "ca.pem")}},
                }
            ]
        },
    }


def _tls_context(directory: Path, peers: list[Json]) -> Json:
    """TLS 1.3 only, this identity's certificate, and peers whose URI SAN
    matches one of `peers` (string matchers), signed by the mesh CA."""
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificate_sds_secret_configs": [_sds("identity", directory)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": peer} for peer in peers]
            },
            "validation_context_sds_secret_config": _sds("trusted_ca", directory),
        },
        "alpn_protocols": ["h2"],
    }


def _downstream_tls(directory: Path, peers: list[Json]) -> Json:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TLS}.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": _tls_context(directory, peers),
        },
    }


def _upstream_tls(directory: Path, peer: str, sni: str) -> Json:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TLS}.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": _tls_context(directory, [{"exact": peer}]),
        },
    }


def _access_log(name: str) -> list[Json]:
    fields = {
        "time": "%START_TIME%",
        "sidecar": name,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_HOST%",
        "peer": "%DOWNSTREAM_PEER_URI_SAN%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
    }
    return [
        {
            "name": "envoy.access_loggers.stdout",
            # Every sidecar checks every upstream replica each second: those checks are not logged.
            "filter": {
                "header_filter": {
                    "header": {
                        "name": ":path",
                        "string_match": {"prefix": "/grpc.health.v1.Health/"},
                        "invert_match": True,
                    }
                }
            },
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": fields},
            },
        }
    ]


def _hcm(name: str, routes: list[Json], filters: list[Json], **extra: Any) -> Json:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": name,
            "codec_type": "AUTO",
            "access_log": _access_log(name),
            "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
            "http_filters": [*filters, _ROUTER],
            **extra,
        },
    }


def _rbac(spec: MeshSpec, service: str) -> Json:
    """Each caller reaches the RPCs the spec allows it; every identity of the
    mesh reaches health checks and reflection."""
    full = SERVICES[service].full_name
    policies: Json = {
        f"{caller}": {
            "permissions": [{"url_path": {"path": {"exact": f"/{full}/{rpc}"}}} for rpc in rpcs],
            "principals": [{"authenticated": {"principal_name": {"exact": spec.identity(caller)}}}],
        }
        for caller, rpcs in spec.callers_of(service).items()
    }
    policies["mesh-infrastructure"] = {
        "permissions": [{"url_path": {"path": {"prefix": prefix}}} for prefix in _INFRASTRUCTURE],
        "principals": [
            {"authenticated": {"principal_name": {"prefix": f"spiffe://{spec.trust_domain}/"}}},
        ],
    }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        },
    }


def _route(method: MethodDescriptor, cluster: str, policy: Policy) -> list[Json]:
    """The routes of one RPC: retried as its contract allows."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    action: Json = {
        "cluster": cluster,
        "timeout": _seconds(policy.timeout_seconds),
        # The client's deadline (grpc-timeout) applies when it is shorter.
        "max_stream_duration": {"grpc_timeout_header_max": _seconds(policy.timeout_seconds)},
    }
    retried = {
        **action,
        "retry_policy": {
            "retry_on": "unavailable,connect-failure,refused-stream,reset",
            "num_retries": policy.retry_attempts,
            "per_try_timeout": _seconds(policy.retry_per_try_timeout_seconds),
            "retry_host_predicate": [
                {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": _PREVIOUS_HOSTS}}
            ],
            "host_selection_retry_max_attempts": 3,
        },
    }
    kind = retryable(method)
    if kind == "always":
        return [{"match": {"path": path}, "route": retried}]
    if kind == "keyed":
        keyed = {"path": path, "headers": [{"name": IDEMPOTENCY_HEADER, "present_match": True}]}
        return [{"match": keyed, "route": retried}, {"match": {"path": path}, "route": action}]
    return [{"match": {"path": path}, "route": action}]


def _cluster(name: str, endpoints: list[tuple[str, int]], dns: bool, **extra: Any) -> Json:
    return {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _H2,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(h, p)}} for h, p in endpoints]}],
        },
        **extra,
    }


def _upstream(spec: MeshSpec, place: Placement, caller: str, callee: str) -> Json:
    policy = spec.policy_of(callee)
    replicas = 1 if place.dns else spec.services[callee].replicas
    return _cluster(
        callee,
        [place.inbound(callee, replica) for replica in range(replicas)],
        place.dns,
        transport_socket=_upstream_tls(place.certificates(caller), spec.identity(callee), callee),
        circuit_breakers={
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_requests": policy.max_requests,
                    "max_pending_requests": policy.max_pending_requests,
                    "max_retries": policy.max_retries,
                    "retry_budget": {
                        "budget_percent": {"value": policy.retry_budget_percent},
                        "min_retry_concurrency": policy.max_retries,
                    },
                }
            ]
        },
        outlier_detection={
            "consecutive_gateway_failure": policy.consecutive_gateway_failures,
            "enforcing_consecutive_gateway_failure": 100,
            "consecutive_5xx": policy.consecutive_gateway_failures,
            "interval": "1s",
            "base_ejection_time": _seconds(policy.ejection_seconds),
            "max_ejection_percent": policy.max_ejection_percent,
        },
        health_checks=[
            {
                "timeout": _seconds(policy.health_check_timeout_seconds),
                "interval": _seconds(policy.health_check_interval_seconds),
                # Envoy checks an idle cluster only once a minute by default: a replica
                # that came up after the first check would wait that long for traffic.
                "no_traffic_interval": _seconds(policy.health_check_interval_seconds),
                "unhealthy_interval": _seconds(policy.health_check_interval_seconds),
                "unhealthy_threshold": policy.health_check_unhealthy_threshold,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": SERVICES[callee].full_name},
            }
        ],
        # Envoy's panic threshold (50%) stays: with half the replicas healthy or more,
        # only the healthy ones get calls; with fewer (a lone replica busy past its
        # health checks), calls go to every replica rather than none; a dead one
        # refuses connections, and the call is retried elsewhere or fails at once.
    )


def _routes(spec: MeshSpec, caller: str) -> list[Json]:
    """One route per RPC `caller` may call (anything else: no route, 404 →
    UNIMPLEMENTED), and each callee's health checks, chosen by a header
    (every service answers the same health path)."""
    health = [
        {
            "match": {
                "prefix": "/grpc.health.v1.Health/",
                "headers": [{"name": UPSTREAM_HEADER, "string_match": {"exact": callee}}],
            },
            "route": {"cluster": callee, "timeout": _seconds(spec.policy_of(callee).health_check_timeout_seconds)},
        }
        for callee in spec.callees(caller)
    ]
    return health + [
        route
        for callee in spec.callees(caller)
        for rpc in spec.allowed(caller, callee)
        for route in _route(methods(callee)[rpc], callee, spec.policy_of(callee))
    ]


def _client_streaming() -> set[str]:
    return {
        f"/{method.containing_service.full_name}/{method.name}"
        for service in SERVICES
        for method in methods(service).values()
        if method.client_streaming
    }


def _outbound(spec: MeshSpec, place: Placement, caller: str, port: int) -> Json:
    return {
        "name": "outbound",
        "address": _address("127.0.0.1", port),
        "filter_chains": [{"filters": [_hcm("outbound", _routes(spec, caller), [])]}],
    }


def _admin(port: int) -> Json:
    return {"address": _address("127.0.0.1", port)}


def sidecar(spec: MeshSpec, place: Placement, service: str, replica: int) -> Json:
    """The bootstrap of one replica's sidecar."""
    directory = place.certificates(service)
    host, port = place.bind_inbound(service, replica)
    local = _cluster("local_service", [("127.0.0.1", place.app(service, replica))], False)
    inbound_route = [{"match": {"prefix": "/"}, "route": {"cluster": "local_service", "timeout": "0s"}}]
    inbound = {
        "name": "inbound",
        "address": _address(host, port),
        "filter_chains": [
            {
                # Any service of the mesh may connect; RBAC then decides, per caller and RPC
                # (PERMISSION_DENIED, which says more than a failed handshake).
                "transport_socket": _downstream_tls(directory, [{"prefix": spec.identity("")}]),
                "filters": [
                    _hcm(
                        "inbound",
                        inbound_route,
                        [_rbac(spec, service)],
                        # Only sidecars and the edge set this header (an outbound listener
                        # strips what a workload sends), so the chain can be trusted: the
                        # service sees the edge's caller, then the edge, or its peer.
                        forward_client_cert_details="APPEND_FORWARD",
                        set_current_client_cert_details={"uri": True},
                    )
                ],
            }
        ],
    }
    clusters = [local, *(_upstream(spec, place, service, callee) for callee in spec.callees(service))]
    return {
        "node": {"id": f"{service}-{replica}", "cluster": service},
        "admin": _admin(place.admin(service, replica)),
        "static_resources": {
            "listeners": [inbound, _outbound(spec, place, service, place.outbound(service, replica))],
            "clusters": clusters,
        },
    }


def gateway_sidecar(spec: MeshSpec, place: Placement) -> Json:
    """The REST gateway's sidecar: outbound only (the edge is its inbound)."""
    return {
        "node": {"id": "gateway-0", "cluster": "gateway"},
        "admin": _admin(place.admin("gateway", 0)),
        "static_resources": {
            "listeners": [_outbound(spec, place, "gateway", place.outbound("gateway", 0))],
            "clusters": [_upstream(spec, place, "gateway", callee) for callee in spec.callees("gateway")],
        },
    }


def _per_minute(requests: int) -> Json:
    """A token bucket letting `requests` through a minute."""
    return {"max_tokens": requests, "tokens_per_fill": requests, "fill_interval": "60s"}


def _rest_local_replies() -> Json:
    """What the edge answers itself (too large, too many token requests, no
    healthy upstream) in the gateway's error shape, a `google.rpc.Status`."""

    def status(http: int, code: int, reason: str) -> Json:
        body = {
            "code": code,
            "message": "%LOCAL_REPLY_BODY%",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "bmc.registry"}
            ],
        }
        return {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": http, "runtime_key": f"edge.local_reply.{http}"},
                    }
                }
            },
            "body_format_override": {"json_format": body},
        }

    return {
        "mappers": [
            status(413, 8, "BODY_TOO_LARGE"),  # RESOURCE_EXHAUSTED, as the gateway answers it
            status(429, 8, "RATE_LIMITED"),  # RESOURCE_EXHAUSTED
            status(503, 14, "UPSTREAM_UNAVAILABLE"),  # UNAVAILABLE
        ]
    }


def edge(spec: MeshSpec, place: Placement) -> Json:
    """The single entry point: REST over HTTPS to the gateway, gRPC over TLS
    to the services (reflection included), token endpoint rate-limited."""
    directory = place.certificates("edge")
    server_tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TLS}.DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                "tls_certificate_sds_secret_configs": [_sds("identity", directory)],
                "alpn_protocols": ["h2", "http/1.1"],
            },
        },
    }
    token_limit = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "oauth_token",
        "token_bucket": _per_minute(spec.edge.token_requests_per_minute),
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        # And per client address: a bucket of its own for each (up to 10,000 addresses at once).
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "descriptors": [
            {
                "entries": [{"key": "remote_address"}],
                "token_bucket": _per_minute(spec.edge.token_requests_per_minute_per_client),
            }
        ],
        "max_dynamic_descriptors": 10_000,
    }
    rest_routes: list[Json] = [
        {
            "match": {"path": "/oauth/token"},
            "route": {"cluster": "gateway", "timeout": "30s"},
            "typed_per_filter_config": {"envoy.filters.http.local_ratelimit": token_limit},
        },
        *(
            {
                "match": {"path": path},
                "route": {"cluster": "gateway", "timeout": "300s"},
                "typed_per_filter_config": _UNBUFFERED,
            }
            for path in spec.edge.streamed_paths
        ),
        {"match": {"prefix": "/"}, "route": {"cluster": "gateway", "timeout": "300s"}},
    ]
    local_ratelimit = {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "edge",
        },
    }

    def buffer(limit: int) -> Json:
        return {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": limit,
            },
        }

    rest = {
        "name": "rest",
        "address": _address(*place.edge_rest),
        "filter_chains": [
            {
                "transport_socket": server_tls,
                "filters": [
                    _hcm(
                        "edge_rest",
                        rest_routes,
                        [local_ratelimit, buffer(spec.edge.max_request_bytes)],
                        generate_request_id=True,
                        preserve_external_request_id=True,  # a client's own id follows its call
                        local_reply_config=_rest_local_replies(),
                        # The edge faces the callers: their address is the connection's (or, behind
                        # trusted proxies, theirs), appended to X-Forwarded-For for the gateway (whose
                        # own limits are per address too).
                        use_remote_address=True,
                        **({"xff_num_trusted_hops": place.edge_trusted_hops} if place.edge_trusted_hops else {}),
                    )
                ],
            }
        ],
    }
    # Operators' and internal clients' gRPC: mutual TLS from any identity of
    # the mesh's CA (operators get theirs from `bmc mesh operator`), routed
    # and retried per RPC exactly as a sidecar's outbound listener does.
    grpc_tls = _downstream_tls(directory, [{"prefix": f"spiffe://{spec.trust_domain}/"}])
    grpc_routes = _routes(spec, "edge")
    streamed = _client_streaming()
    for route in grpc_routes:  # an upload streamed in chunks is limited by the service, not buffered here
        if route["match"].get("path") in streamed:
            route["typed_per_filter_config"] = _UNBUFFERED
    # Reflection (a bidirectional stream) and health of the platform as a whole.
    grpc_routes += [
        {"match": {"prefix": prefix}, "route": {"cluster": PLATFORM_REFLECTION}, "typed_per_filter_config": _UNBUFFERED}
        for prefix in _INFRASTRUCTURE
    ]
    grpc = {
        "name": "grpc",
        "address": _address(*place.edge_grpc),
        "filter_chains": [
            {
                "transport_socket": grpc_tls,
                "filters": [
                    _hcm(
                        "edge_grpc",
                        grpc_routes,
                        [buffer(spec.edge.max_grpc_request_bytes)],
                        generate_request_id=True,
                        preserve_external_request_id=True,  # a client's own id follows its call
                        # The services see who called: the operator's identity, then the edge's.
                        forward_client_cert_details="SANITIZE_SET",
                        set_current_client_cert_details={"uri": True},
                    )
                ],
            }
        ],
    }
    gateway = _cluster("gateway", [place.gateway], place.dns)
    gateway["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    return {
        "node": {"id": "edge", "cluster": "edge"},
        "admin": _admin(place.admin("edge", 0)),
        "static_resources": {
            "listeners": [rest, grpc],
            "clusters": [gateway, *(_upstream(spec, place, "edge", name) for name in spec.callees("edge"))],
        },
    }


def bootstraps(spec: MeshSpec, place: Placement) -> dict[str, Json]:
    """Every Envoy of a placement, by file name. In AWS every task of a
    service runs the same sidecar (replicas are tasks behind one DNS name)."""
    configs: dict[str, Json] = {}
    for service in SERVICES:
        replicas = 1 if place.dns else spec.services[service].replicas
        for replica in range(replicas):
            suffix = "" if place.dns else f"-{replica}"
            configs[f"{service}{suffix}.json"] = sidecar(spec, place, service, replica)
    configs["gateway.json"] = gateway_sidecar(spec, place)
    configs["edge.json"] = edge(spec, place)
    return configs


def local_placement(base: int, gateway_port: int, pki: Path, edge_port: int) -> Placement:
    """This machine: everything on loopback, ports from `base` (BMC_PORT_BASE).
    Replica r of the service at offset o: its app at base+o (r=0) or
    base+200+10o+r, its sidecar inbound base+100+10o+r, outbound
    base+300+10o+r, admin base+400+10o+r; the gateway is offset 6, the edge
    7 (its REST on `edge_port`, BMC_EDGE_PORT, its gRPC on the next port)."""
    offsets = {name: spec.port_offset for name, spec in SERVICES.items()} | {"gateway": 6, "edge": 7}

    def at(block: int) -> Callable[[str, int], int]:
        return lambda name, replica: base + block + 10 * offsets[name] + replica

    def inbound(name: str, replica: int) -> tuple[str, int]:
        return "127.0.0.1", at(100)(name, replica)

    return Placement(
        name="local",
        inbound=inbound,
        bind_inbound=inbound,
        app=lambda name, replica: base + offsets[name] if replica == 0 else at(200)(name, replica),
        outbound=at(300),
        admin=at(400),
        certificates=lambda identity: pki / "mesh" / identity,
        dns=False,
        edge_rest=("127.0.0.1", edge_port),
        edge_grpc=("127.0.0.1", edge_port + 1),
        gateway=("127.0.0.1", gateway_port),
    )


def aws_placement(namespace: str = "bmc.local") -> Placement:
    """ECS Fargate: one sidecar per task, the app on the task's loopback,
    other services by their Cloud Map names; certificates written into
    /etc/envoy/tls/<identity>/ by the task's init container (from ACM Private CA). The
    edge runs in the gateway's task, behind the internal load balancer, and
    reaches the gateway on the task's loopback."""
    return Placement(
        name="aws",
        inbound=lambda name, replica: (f"{name}.{namespace}", 8443),
        bind_inbound=lambda name, replica: ("0.0.0.0", 8443),  # noqa: S104 - the task's own interface
        app=lambda name, replica: 50051,
        outbound=lambda name, replica: 15001,
        admin=lambda name, replica: 9902 if name == "edge" else 9901,  # the edge shares the gateway's task
        certificates=lambda identity: Path("/etc/envoy/tls") / identity,  # the gateway's task holds two
        dns=True,
        edge_rest=("0.0.0.0", 8443),  # noqa: S104
        edge_grpc=("0.0.0.0", 8444),  # noqa: S104
        gateway=("127.0.0.1", 8080),
        edge_trusted_hops=2,
    )


def mesh_placement(settings: Settings) -> Placement:
    """The placement a deployment's settings name: this machine's, or an ECS task's."""
    if settings.mesh_placement == "aws":
        return aws_placement()
    return local_placement(settings.port_base, settings.gateway_port, settings.pki_dir, settings.edge_port)
