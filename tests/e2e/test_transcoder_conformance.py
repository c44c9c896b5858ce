"""Conformance of the REST gateway with Envoy's `grpc_json_transcoder`, an
independent implementation of the `google.api.http` mapping: a real Envoy,
fed a descriptor set of the same contracts, transcodes into the platform
through the edge; every GET route and the POST routes without lasting side
effects (or made repeatable by their `requestId`) are called on both, with
real resource names, and wherever both succeed the JSON must be identical.
Where they may differ by design (errors, unknown fields) is recorded in
mesh/README.md."""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor import FileDescriptor

from services.gateway.routes import routes_of
from services.kit.topology import SERVICES
from services.mesh import envoy
from services.mesh.access import operator
from services.mesh.render import mesh_placement
from tests.conftest import Platform, free_port_base
from tests.e2e.rest import Rest, certified_invoice
from tests.integration.clients import wait_until
from tests.integration.invoice_helpers import invoice, load_sample_catalog

pytestmark = pytest.mark.e2e
ENVOY = "type.googleapis.com/envoy.extensions"
ROUTES = [r for name, spec in SERVICES.items() for r in routes_of(spec.descriptor, name)]


def descriptor_set() -> bytes:
    """The contracts as the gateway loads them (the generated modules), with every import."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        for dependency in file.dependencies:
            add(dependency)
        seen.add(file.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        files.file.append(proto)

    for spec in SERVICES.values():
        add(spec.descriptor.file)
    return files.SerializeToString()


def transcoder_bootstrap(platform: Platform, directory: Path, port: int, admin: int) -> dict[str, Any]:
    """An Envoy that transcodes REST into gRPC and sends it into the mesh
    through the edge, with an operator's certificate."""
    (directory / "bmc.binpb").write_bytes(descriptor_set())
    identity = operator(platform.settings, "transcoder")
    host, port_value = mesh_placement(platform.settings).edge_grpc
    address = {"socket_address": {"address": host, "port_value": port_value}}
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "proto_descriptor": str(directory / "bmc.binpb"),
        "services": [spec.full_name for spec in SERVICES.values()],
        "print_options": {"always_print_primitive_fields": True},
        "convert_grpc_status": True,
    }
    hcm = {
        "@type": f"{ENVOY}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "transcoder",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "edge"}}]}
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "localhost",
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(identity.directory / "cert.pem")},
                    "private_key": {"filename": str(identity.directory / "key.pem")},
                }
            ],
            "validation_context": {"trusted_ca": {"filename": str(identity.directory / "ca.pem")}},
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "edge",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "edge",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                    },
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def transcoder(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of Envoy's transcoder in front of the platform."""
    if platform.backend != "embedded":
        pytest.skip("one backend is enough to compare two transcoders")
    directory = tmp_path_factory.mktemp("transcoder")
    base = free_port_base(mesh=False)
    config = directory / "transcoder.json"
    config.write_text(json.dumps(transcoder_bootstrap(platform, directory, base + 1, base + 2)))
    assert envoy.validate(config) == ""
    process = envoy.start(config, directory / "envoy.log")
    try:
        envoy.wait_ready(base + 2, process)
        yield f"http://127.0.0.1:{base + 1}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _first_names(admin: Rest) -> dict[str, str]:
    """A real resource name per collection (`invoices` → `invoices/…`), from the collections' List routes."""
    names: dict[str, str] = {}
    for route in ROUTES:
        if route.http_method != "GET" or route.template.variables:
            continue
        listed = admin("GET", route.template.text)
        if listed.status_code != 200:
            continue
        for value in listed.json().values():
            if isinstance(value, list) and value and isinstance(value[0], dict) and "name" in value[0]:
                collection = value[0]["name"].split("/")[0]
                names.setdefault(collection, value[0]["name"])
    return names


def _path(route: Any, names: dict[str, str], code: str) -> str | None:
    """The route's template filled with real names; None when there is no such resource."""
    path = route.template.text
    for variable in route.template.variables:
        match = re.search(re.escape("{" + variable.field_path) + r"(=([^}/]*)/\*)?\}", path)
        assert match is not None, path
        collection = match.group(2)
        value = names.get(collection) if collection else (code if variable.field_path == "code" else None)
        if value is None:
            return None
        path = path[: match.start()] + value + path[match.end() :]
    return path


def test_the_gateway_and_envoys_transcoder_answer_the_same_json(platform: Platform, transcoder: str) -> None:
    load_sample_catalog(platform.settings)
    registered, certificate, _ = certified_invoice(platform)
    admin = Rest(platform, "admin")
    # Nothing may move between the two calls of a pair: the certified invoice's last event recorded first.
    wait_until(
        lambda: admin("GET", f"/v1/{registered['name']}").json()["state"] == "INVOICE_STATE_CERTIFIED", timeout=30
    )
    names = _first_names(admin)
    code = certificate["verificationCode"]
    key = f"conformance-{uuid.uuid4().hex[:8]}"
    broker = Rest(platform, "broker", tenant="conformance")
    # POST routes whose repetition changes nothing: reads, and a registration made idempotent by its requestId.
    posts: dict[str, tuple[Any, dict[str, str] | None]] = {
        "/v1/products:batchGet": ({"names": ["products/MAIZ-AMARILLO", "products/CAFE-PERGAMINO"]}, None),
        "/v1/events:verifyChain": ({}, None),
        "/v1/invoices": (json_format.MessageToDict(invoice()), {"requestId": key}),
    }
    queries = {"/v1/certificates:verify": {"code": code}}
    compared, skipped, differing = [], [], []
    # The registration last: its commission and certificate follow asynchronously and change what lists show.
    ordered = sorted(ROUTES, key=lambda r: (r.http_method, r.template.text) == ("POST", "/v1/invoices"))
    for route in ordered:
        text, method = route.template.text, route.http_method
        if method not in ("GET", "POST") or (method == "POST" and text not in posts):
            continue
        path = _path(route, names, code)
        if path is None:
            skipped.append(f"{method} {text}: no such resource here")
            continue
        body, params = posts[text] if method == "POST" else (None, queries.get(text))
        caller = broker if (method, text) == ("POST", "/v1/invoices") else admin  # a broker registers
        headers = {"Authorization": str(caller.session.headers["Authorization"])}
        ours = caller(method, path, json=body, params=params)
        theirs = requests.request(method, transcoder + path, json=body, params=params, headers=headers, timeout=60)
        if (ours.status_code == 200) != (theirs.status_code == 200):
            differing.append(f"{method} {text}: gateway {ours.status_code} {ours.text[:200]}; "
                             f"envoy {theirs.status_code} {theirs.text[:200]}")  # fmt: skip
        elif ours.status_code != 200:
            skipped.append(f"{method} {text}: both {ours.status_code}")
        elif (_float32(ours.json()) == _float32(theirs.json())) if _is_json(ours) else ours.content == theirs.content:
            compared.append(f"{method} {text}")
        else:
            differing.append(f"{method} {text}:\n  gateway: {ours.text[:400]}\n  envoy:   {theirs.text[:400]}")
    assert not differing, "\n".join(differing)
    gets = [r for r in ROUTES if r.http_method == "GET"]
    assert len(compared) >= len(gets) * 3 // 4, (
        "compared:\n" + "\n".join(compared) + "\nskipped:\n" + "\n".join(skipped)
    )


def _float32(value: Any) -> Any:
    """The JSON with every number read as a float32: proto3 JSON lets a
    `float` be written with any digits that read back as the same float32
    (the gateway writes the shortest, 0.8033067; Envoy nine digits, 0.803306699)."""
    if isinstance(value, dict):
        return {k: _float32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_float32(v) for v in value]
    if isinstance(value, float):
        return struct.unpack("f", struct.pack("f", value))[0]
    return value


def _is_json(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").startswith("application/json")
