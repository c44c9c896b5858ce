"""The dependency locks (`requirements/*.lock`, compiled by `make lock`):
`make setup` installs dev.lock, the services' image runtime.lock, each file
checked against its hash. These tests fail when pyproject.toml changes and
the locks were not compiled again, when a lock is missing a package that a
locked one needs, and when this environment is not what the lock says."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {name: ROOT / "requirements" / f"{name}.lock" for name in ("runtime", "dev", "uv", "checkov")}
_ENTRY = re.compile(r"^(?P<requirement>[A-Za-z0-9][^\s\\]*(?: ; [^\\]+)?)\s*\\$")


class Locked:
    def __init__(self, requirement: Requirement, hashes: list[str]) -> None:
        self.name = canonicalize_name(requirement.name)
        self.version = Version(next(iter(requirement.specifier)).version)
        self.marker = requirement.marker
        self.hashes = hashes

    def applies(self) -> bool:
        """Whether this environment installs it (the lock is universal: some entries are for other platforms)."""
        return self.marker is None or self.marker.evaluate()


@cache
def lock(kind: str) -> dict[str, list[Locked]]:
    entries: dict[str, list[Locked]] = {}
    current: Locked | None = None
    for line in LOCKS[kind].read_text().splitlines():
        if match := _ENTRY.match(line):
            current = Locked(Requirement(match["requirement"]), [])
            entries.setdefault(current.name, []).append(current)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            current.hashes.append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return entries


def direct(kind: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"]) + (list(project["optional-dependencies"]["dev"]) if kind == "dev" else [])
    return [Requirement(r) for r in listed]


def version_here(kind: str, name: str) -> Version | None:
    for entry in lock(kind).get(canonicalize_name(name), []):
        if entry.applies():
            return entry.version
    return None


@pytest.mark.parametrize("kind", ["runtime", "dev"])
def test_every_direct_dependency_is_locked_at_its_pin(kind: str) -> None:
    stale = [
        f"{r.name}{r.specifier} (locked: {version_here(kind, r.name)})"
        for r in direct(kind)
        if version_here(kind, r.name) not in r.specifier
    ]
    assert not stale, f"pyproject.toml changed; run `make lock`: {stale}"


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_every_locked_file_is_hashed(kind: str) -> None:
    unhashed = [e.name for entries in lock(kind).values() for e in entries if not e.hashes]
    assert not unhashed


def test_make_setup_installs_with_the_uv_the_project_locks() -> None:
    assert version_here("uv", "uv") == version_here("dev", "uv") is not None


def test_the_image_runs_the_versions_the_tests_run() -> None:
    differ = {
        name: (version_here("runtime", name), version_here("dev", name))
        for name in lock("runtime")
        if version_here("runtime", name) != version_here("dev", name)
    }
    assert not differ


def test_this_environment_is_the_dev_lock() -> None:
    """`make setup` installed exactly the lock (a package installed by hand, or a stale venv, shows here)."""
    wrong = {}
    for name in lock("dev"):
        wanted = version_here("dev", name)
        if wanted is None:
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != wanted:
            wrong[name] = (str(wanted), str(installed))
    assert not wrong, f"the environment differs from requirements/dev.lock (run `make setup`): {wrong}"


def test_the_lock_is_closed_under_dependencies() -> None:
    """Each locked package's own requirements (for this platform, with the
    extras the project asks for) are locked too, at versions they admit."""
    extras: dict[str, set[str]] = {}
    for requirement in direct("dev"):
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    missing = []
    environment = default_environment()
    for name in lock("dev"):
        if version_here("dev", name) is None:
            continue
        for raw in metadata.requires(name) or []:
            needed = Requirement(raw)
            asked = extras.get(name, set()) | {""}
            if needed.marker and not any(needed.marker.evaluate({**environment, "extra": e}) for e in asked):
                continue
            have = version_here("dev", needed.name)
            if have is None or have not in needed.specifier:
                missing.append(f"{name} needs {needed} (locked: {have})")
    assert not missing
