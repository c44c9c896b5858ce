"""Migrations are frozen text: they create the same schema whenever they
run, so none imports code that may change later (the kit's, a service's).
A data migration may read a v1 contract's generated messages: those only
grow, compatibly (`buf breaking`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MIGRATIONS = sorted((Path(__file__).resolve().parents[2] / "services").glob("*/migrations/versions/*.py"))


@pytest.mark.parametrize("path", MIGRATIONS, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_a_migration_imports_nothing_of_the_project(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [name for name in imported if name and name.split(".")[0] == "services"] == []


def test_the_check_sees_a_project_import(tmp_path: Path) -> None:
    migration = tmp_path / "0099_bad.py"
    migration.write_text("from services.kit.events import OUTBOX_DDL\n")
    with pytest.raises(AssertionError):
        test_a_migration_imports_nothing_of_the_project(migration)
