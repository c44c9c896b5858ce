"""checkov over the Terraform estate and the Dockerfiles: no failed check,
and every check left out says why in the code (`# checkov:skip=ID:reason`).

checkov runs from its own virtualenv (`.venv-checkov`, `make setup`, pinned
by requirements/checkov.lock), offline (`--skip-download`)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
TARGETS = {"terraform": ROOT / "infra" / "terraform", "dockerfile": ROOT / "infra" / "docker"}
SKIP = re.compile(r"checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>.*))?")


def _scan(framework: str, directory: Path) -> dict[str, object]:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: `make setup` puts it in .venv-checkov")
    ran = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = json.loads(ran.stdout)
    reports = report if isinstance(report, list) else [report]
    return {
        "failed": [f for r in reports for f in r["results"].get("failed_checks", [])],
        "skipped": sum(r["summary"]["skipped"] for r in reports),
        "passed": sum(r["summary"]["passed"] for r in reports),
    }


@pytest.mark.parametrize("framework", sorted(TARGETS))
def test_checkov_finds_nothing_unexplained(framework: str) -> None:
    scan = _scan(framework, TARGETS[framework])
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}:{f['file_line_range'][0]})"
        for f in scan["failed"]  # type: ignore[attr-defined]
    ]
    print(f"checkov {framework}: {scan['passed']} passed, {scan['skipped']} skipped with reasons")
    assert scan["passed"], "checkov checked nothing"
    assert not failed, "fix these, or skip each with its reason in a checkov:skip comment"


def test_every_skip_gives_its_reason() -> None:
    unexplained = []
    for path in [*TARGETS["terraform"].rglob("*.tf"), *TARGETS["dockerfile"].glob("*Dockerfile")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if (skip := SKIP.search(line)) and len((skip["reason"] or "").split()) < 4:
                unexplained.append(f"{path.relative_to(ROOT)}:{number}: {skip['check']}")
    assert not unexplained, "a skip says why, in a sentence"
