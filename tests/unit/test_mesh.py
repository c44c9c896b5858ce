"""The mesh spec and its rendering, without running Envoy: the spec is
checked against the contracts, retries follow the AIPs, RBAC follows the
spec, and the rendered files in mesh/ are the spec's current rendering."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.kit.clients import IDEMPOTENCY_HEADER, UPSTREAM_HEADER
from services.kit.settings import Settings
from services.kit.telemetry import forwarded_identities
from services.mesh import files
from services.mesh.render import aws_placement, bootstraps, local_placement, mesh_placement
from services.mesh.spec import SPEC_FILE, MeshSpec, load, methods, retryable


def _spec(**changes: Any) -> dict[str, Any]:
    with SPEC_FILE.open("rb") as spec:
        raw: dict[str, Any] = tomllib.load(spec)
    raw.update(changes)
    return raw


def test_the_rendered_mesh_is_the_specs_current_rendering() -> None:
    assert files.stale() == [], "run `bmc mesh render`"


def test_a_stale_or_stray_rendering_is_named(tmp_path: Path) -> None:
    for relative, content in files.rendered().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    assert files.stale(tmp_path) == []
    (tmp_path / "local" / "product-1.json").write_text("{}")
    (tmp_path / "aws" / "extra.json").write_text("{}")
    (tmp_path / "local" / "edge.json").unlink()
    assert files.stale(tmp_path) == ["aws/extra.json", "local/edge.json", "local/product-1.json"]


def test_a_spec_naming_an_rpc_the_contract_lacks_is_refused() -> None:
    raw = _spec()
    raw["callers"]["invoice"]["product"] = ["BatchGetProducts", "DropCatalog"]
    with pytest.raises(ValidationError, match="DropCatalog"):
        MeshSpec.model_validate(raw)


def test_a_spec_missing_a_service_or_with_an_unknown_caller_is_refused() -> None:
    raw = _spec()
    del raw["services"]["ocr"]
    with pytest.raises(ValidationError, match="services must be exactly"):
        MeshSpec.model_validate(raw)
    raw = _spec()
    raw["callers"]["mallory"] = {"invoice": ["*"]}
    with pytest.raises(ValidationError, match="unknown caller"):
        MeshSpec.model_validate(raw)


def test_what_envoy_may_retry_comes_from_the_contracts() -> None:
    invoice, product = methods("invoice"), methods("product")
    assert retryable(product["BatchGetProducts"]) == "always"
    assert retryable(invoice["GetInvoice"]) == "always"
    assert retryable(invoice["RegisterInvoice"]) == "keyed", "a mutation with a request_id"
    assert retryable(invoice["BatchRegisterInvoices"]) == "never", "its keys are per item, not per call"
    assert retryable(product["UpdateProduct"]) == "never"


def _sidecar(name: str) -> dict[str, Any]:
    spec = load()
    configs = bootstraps(spec, local_placement(50050, 8080, Path("/pki"), 8443))
    config: dict[str, Any] = configs[name]
    return config


def _listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    (listener,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    return listener  # type: ignore[no-any-return]


def test_rbac_lets_each_caller_reach_only_the_rpcs_the_spec_allows() -> None:
    inbound = _listener(_sidecar("product-0.json"), "inbound")
    hcm = inbound["filter_chains"][0]["filters"][0]["typed_config"]
    (rbac,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
    policies = rbac["typed_config"]["rules"]["policies"]
    assert rbac["typed_config"]["rules"]["action"] == "ALLOW"
    invoice = policies["invoice"]
    assert invoice["principals"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://bmc.local/service/invoice"}}}
    ]
    assert invoice["permissions"] == [
        {"url_path": {"path": {"exact": "/bmc.product.v1.ProductService/BatchGetProducts"}}}
    ]
    assert "certificate" not in policies, "the certificate service never calls the catalog"
    assert len(policies["gateway"]["permissions"]) == len(methods("product"))
    peers = inbound["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert peers["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    sans = peers["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert [s["matcher"] for s in sans] == [{"prefix": "spiffe://bmc.local/service/"}], "RBAC decides who calls"


def test_outbound_routes_retry_only_what_may_be_retried() -> None:
    outbound = _listener(_sidecar("gateway.json"), "outbound")
    routes = outbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for route in routes:
        by_path.setdefault(route["match"].get("path") or route["match"]["prefix"], []).append(route)
    health = by_path["/grpc.health.v1.Health/"]
    assert [r["route"]["cluster"] for r in health] == ["invoice", "product", "ocr", "commission", "certificate"]
    assert health[1]["match"]["headers"] == [{"name": UPSTREAM_HEADER, "string_match": {"exact": "product"}}]
    (get,) = by_path["/bmc.invoice.v1.InvoiceService/GetInvoice"]
    assert get["route"]["retry_policy"]["num_retries"] == 2
    keyed, plain = by_path["/bmc.invoice.v1.InvoiceService/RegisterInvoice"]
    assert keyed["match"]["headers"] == [{"name": IDEMPOTENCY_HEADER, "present_match": True}]
    assert "retry_policy" in keyed["route"]
    assert "retry_policy" not in plain["route"], "without its request_id a registration is never retried"
    (batch,) = by_path["/bmc.invoice.v1.InvoiceService/BatchRegisterInvoices"]
    assert "retry_policy" not in batch["route"]
    assert get["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "30s"}
    (lookup,) = by_path["/bmc.product.v1.ProductService/BatchGetProducts"]
    assert lookup["route"]["timeout"] == "2s", "the product service's own policy"


def test_a_service_reaches_only_the_rpcs_it_may_call() -> None:
    outbound = _listener(_sidecar("commission-0.json"), "outbound")
    routes = outbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert sorted({r["match"]["path"] for r in routes if "path" in r["match"]}) == [
        "/bmc.invoice.v1.InvoiceService/ListInvoiceEvents",
        "/bmc.product.v1.ProductService/BatchGetProducts",
    ]


def test_replicas_are_endpoints_of_one_cluster_locally_and_one_name_in_aws() -> None:
    spec = load()
    local = bootstraps(spec, local_placement(50050, 8080, Path("/pki"), 8443))
    aws = bootstraps(spec, aws_placement())
    assert "product-1.json" in local
    assert "product.json" in aws
    assert "product-1.json" not in aws

    def endpoints(config: dict[str, Any]) -> list[dict[str, Any]]:
        (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "product"]
        return [
            e["endpoint"]["address"]["socket_address"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]

    assert endpoints(local["invoice-0.json"]) == [
        {"address": "127.0.0.1", "port_value": 50170},
        {"address": "127.0.0.1", "port_value": 50171},
    ]
    assert endpoints(aws["invoice.json"]) == [{"address": "product.bmc.local", "port_value": 8443}]


def test_the_idempotency_header_is_always_valid_metadata() -> None:
    """Any request id the contract accepts (unicode included) makes a header
    gRPC can send; none, no header."""
    from bmc.product.v1 import product_service_pb2
    from services.kit.clients import keyed

    assert keyed(product_service_pb2.CreateProductRequest()) == ()
    assert keyed(product_service_pb2.CreateProductRequest(request_id="abc-1")) == ((IDEMPOTENCY_HEADER, "abc-1"),)
    for odd in ("\u0099\u0090r\u00e7", "tab\there", "ñandú"):
        ((name, value),) = keyed(product_service_pb2.CreateProductRequest(request_id=odd))
        assert name == IDEMPOTENCY_HEADER
        assert value.isascii()
        assert value.isprintable()
    assert keyed(product_service_pb2.GetProductRequest(name="products/X")) == ()


def test_the_forwarded_client_certificate_chain_names_each_workload_in_order() -> None:
    header = (
        "By=spiffe://bmc.local/service/edge;Hash=ab12;URI=spiffe://bmc.local/operator/ana,"
        'By=spiffe://bmc.local/service/product;Hash=cd34;Subject="CN=edge,O=BMC Registry";URI=spiffe://bmc.local/service/edge'
    )
    assert forwarded_identities(header) == ["spiffe://bmc.local/operator/ana", "spiffe://bmc.local/service/edge"]
    assert forwarded_identities("") == []
    assert forwarded_identities("By=spiffe://bmc.local/service/edge;Hash=ab12") == []


def test_in_an_ecs_task_a_service_binds_and_calls_where_its_sidecar_expects(tmp_path: Path) -> None:
    place = mesh_placement(Settings(data_dir=tmp_path, mesh_placement="aws"))
    sidecar_config = bootstraps(load(), aws_placement())["product.json"]
    local = sidecar_config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert local["endpoint"]["address"]["socket_address"]["port_value"] == place.app("product", 0)
    outbound = _listener(sidecar_config, "outbound")["address"]["socket_address"]["port_value"]
    assert outbound == place.outbound("product", 0)
