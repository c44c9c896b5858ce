"""Every rendered Envoy bootstrap, for this machine and for AWS, passes the
real Envoy's offline validation (`envoy --mode validate`), with its
certificate directories pointed at scratch ones holding the SDS files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.mesh import files
from services.mesh.render import sds_files

ENVOY = Path(sys.executable).parent / "envoy"
RENDERED = sorted(p for d in ("local", "aws") for p in (files.MESH_DIR / d).glob("*.json"))
# Where each placement's sidecars find their certificates (see services/mesh/render.py).
CERTIFICATE_ROOTS = {"local": ".bmc/pki/mesh/", "aws": "/etc/envoy/tls"}


@pytest.mark.parametrize("path", RENDERED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_rendered_bootstrap_passes_envoy_validation(path: Path, tmp_path: Path) -> None:
    placement = path.parent.name
    root = CERTIFICATE_ROOTS[placement]
    text = path.read_text()
    assert root in text, "the placement's certificate directory moved: update CERTIFICATE_ROOTS"
    scratch = tmp_path / "tls"
    text = text.replace(root, f"{scratch}/" if root.endswith("/") else str(scratch))
    for directory in {Path(p) for p in _sds_directories(json.loads(text))}:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in sds_files(directory).items():
            (directory / name).write_text(json.dumps(content))
    config = tmp_path / path.name
    config.write_text(text)
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_validation_catches_a_broken_bootstrap(tmp_path: Path) -> None:
    broken = json.loads((files.MESH_DIR / "local" / "gateway.json").read_text())
    broken["static_resources"]["clusters"][0]["type"] = "NO_SUCH_TYPE"
    config = tmp_path / "broken.json"
    config.write_text(json.dumps(broken))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0


def _sds_directories(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["watched_directory"]["path"]] if "watched_directory" in node else []
        return found + [d for value in node.values() for d in _sds_directories(value)]
    if isinstance(node, list):
        return [d for value in node for d in _sds_directories(value)]
    return []
