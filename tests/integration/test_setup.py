"""The two-command promise: `make` sets a fresh checkout up from nothing, and
a second run finds everything in place and reinstalls nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _checkout(destination: Path) -> None:
    """The working tree as a clone would have it: tracked and unignored files only."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.mark.timeout(900)
def test_make_sets_up_a_clean_checkout_then_is_idempotent(tmp_path: Path) -> None:
    checkout = tmp_path / "bmc-registry"
    _checkout(checkout)
    assert not (checkout / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "BMC_"))}
    first = subprocess.run(["make", "setup"], cwd=checkout, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pip install" in first.stdout
    bmc = checkout / ".venv" / "bin" / "bmc"
    help_text = subprocess.run([str(bmc), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("up", "demo", "token"):
        assert command in help_text
    check = subprocess.run(["make", "gen-check"], cwd=checkout, env=env, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    second = subprocess.run(["make", "setup"], cwd=checkout, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0
    assert "pip install" not in second.stdout, "a set-up checkout must not reinstall"
