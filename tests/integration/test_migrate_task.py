"""The one-off migration task a deployment runs before a rollout
(`python -m services.<name>.main --migrate`, an ECS RunTask of the release's
image): it creates the service's database, brings it to the head of its
migrations, and exits without serving."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from services.kit.database import database_name
from tests.conftest import (
    MACHINE_DATABASE_URL,
    ROOT,
    cleanup_machine_backend,
    machine_backend_available,
    make_settings,
)


@pytest.mark.parametrize("service", ["invoice", "product", "commission", "certificate", "ocr"])
def test_migrate_creates_and_migrates_then_exits(tmp_path: Path, service: str) -> None:
    if reason := machine_backend_available():
        pytest.skip(reason)
    settings = make_settings(tmp_path, "machine")
    try:
        ran = subprocess.run(
            [sys.executable, "-m", f"services.{service}.main", "--migrate"],
            env={**settings.as_environment(), "PATH": "/usr/bin:/bin"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        head = ScriptDirectory.from_config(_config(service)).get_current_head()
        assert asyncio.run(_version(database_name(settings, service))) == head
        assert '"migrated"' in ran.stdout + ran.stderr
    finally:
        cleanup_machine_backend(settings)


def _config(service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    return config


async def _version(database: str) -> str:
    connection = await asyncpg.connect(MACHINE_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}")
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()
