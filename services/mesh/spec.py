"""The mesh spec (`mesh/mesh.toml`): services and their replicas, who may
call which RPC, and the policy of calls to each service; checked against
the contracts (every RPC named exists) when it is loaded."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.descriptor import MethodDescriptor
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.kit.topology import SERVICES

SPEC_FILE = Path(__file__).resolve().parents[2] / "mesh" / "mesh.toml"
# Identities outside the five services: the REST gateway and the edge.
CLIENTS = ("gateway", "edge")
# Verbs of AIP standard and read methods: safe to retry.
_READS = ("Get", "List", "BatchGet", "Verify", "Quote", "Download", "Export")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Service(_Strict):
    replicas: int = Field(ge=1, le=5)


class Policy(_Strict):
    timeout_seconds: float = Field(gt=0)
    max_requests: int = Field(ge=1)
    max_pending_requests: int = Field(ge=1)
    max_retries: int = Field(ge=0)
    retry_attempts: int = Field(ge=0, le=5)
    retry_per_try_timeout_seconds: float = Field(gt=0)
    retry_budget_percent: float = Field(gt=0, le=100)
    consecutive_gateway_failures: int = Field(ge=1)
    ejection_seconds: float = Field(gt=0)
    max_ejection_percent: int = Field(ge=0, le=100)
    health_check_interval_seconds: float = Field(gt=0)
    health_check_timeout_seconds: float = Field(gt=0)
    health_check_unhealthy_threshold: int = Field(ge=1)


class Edge(_Strict):
    token_requests_per_minute: int = Field(ge=1)
    token_requests_per_minute_per_client: int = Field(ge=1)
    max_request_bytes: int = Field(ge=1024)
    max_grpc_request_bytes: int = Field(ge=1024)
    streamed_paths: list[str] = Field(default_factory=list)  # REST uploads the gateway streams and limits itself


class MeshSpec(_Strict):
    trust_domain: str
    services: dict[str, Service]
    callers: dict[str, dict[str, list[str]]]
    policy: dict[str, dict[str, float | int]]
    edge: Edge

    @model_validator(mode="after")
    def _consistent(self) -> MeshSpec:
        if set(self.services) != set(SERVICES):
            raise ValueError(f"services must be exactly {sorted(SERVICES)}")
        for caller, callees in self.callers.items():
            if caller not in SERVICES and caller not in CLIENTS:
                raise ValueError(f"unknown caller {caller!r}")
            for callee, rpcs in callees.items():
                known = set(methods(callee))
                unknown = [rpc for rpc in rpcs if rpc != "*" and rpc not in known]
                if unknown:
                    raise ValueError(f"{caller} → {callee}: no such RPC {unknown} in {SERVICES[callee].full_name}")
        unknown_policies = set(self.policy) - {"default", *SERVICES}
        if unknown_policies:
            raise ValueError(f"policies of unknown services: {sorted(unknown_policies)}")
        for name in SERVICES:
            self.policy_of(name)  # complete and valid
        return self

    def identity(self, name: str) -> str:
        return f"spiffe://{self.trust_domain}/service/{name}"

    def policy_of(self, service: str) -> Policy:
        return Policy.model_validate({**self.policy.get("default", {}), **self.policy.get(service, {})})

    def allowed(self, caller: str, callee: str) -> list[str]:
        """The RPCs `caller` may call on `callee` (all of them for "*")."""
        rpcs = self.callers.get(caller, {}).get(callee, [])
        return list(methods(callee)) if "*" in rpcs else rpcs

    def callees(self, caller: str) -> list[str]:
        return [callee for callee in SERVICES if self.allowed(caller, callee)]

    def callers_of(self, callee: str) -> Mapping[str, list[str]]:
        return {caller: self.allowed(caller, callee) for caller in self.callers if self.allowed(caller, callee)}


def methods(service: str) -> Mapping[str, MethodDescriptor]:
    """The RPCs of a service, from its contract."""
    return dict(SERVICES[service].descriptor.methods_by_name)


def retryable(method: MethodDescriptor) -> str:
    """How Envoy may retry an RPC: "always" (a read, AIP standard Get/List/
    BatchGet), "keyed" (a mutation whose request has a `request_id`: only
    when the call carries one) or "never"."""
    if method.name.startswith(_READS):
        return "always"
    if "request_id" in method.input_type.fields_by_name:
        return "keyed"
    return "never"


def load(path: Path = SPEC_FILE) -> MeshSpec:
    with path.open("rb") as spec:
        return MeshSpec.model_validate(tomllib.load(spec))
