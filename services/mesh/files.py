"""The rendered mesh in the repository: `mesh/local/` (this machine, default
ports, certificates under `.bmc/pki/mesh/`) and `mesh/aws/` (what the ECS
task definitions carry). `bmc mesh render` writes them; `--check` says
whether they are stale."""

from __future__ import annotations

import json
from pathlib import Path

from services.kit.settings import Settings
from services.mesh.render import Json, aws_placement, bootstraps, local_placement
from services.mesh.spec import SPEC_FILE, MeshSpec, load

MESH_DIR = SPEC_FILE.parent


def text(config: Json) -> str:
    return json.dumps(config, indent=2, sort_keys=False) + "\n"


def rendered(spec: MeshSpec | None = None) -> dict[Path, str]:
    """Every rendered file, by its path under `mesh/`."""
    spec = spec or load()
    local = local_placement(
        Settings.model_fields["port_base"].default,
        Settings.model_fields["gateway_port"].default,
        Path(".bmc/pki"),
        Settings.model_fields["edge_port"].default,
    )
    files: dict[Path, str] = {}
    for place in (local, aws_placement()):
        for name, config in bootstraps(spec, place).items():
            files[Path(place.name) / name] = text(config)
    return files


def stale(root: Path = MESH_DIR) -> list[str]:
    """The rendered files that differ from the spec's rendering (or are missing or extra)."""
    expected = rendered()
    found = {p.relative_to(root): p.read_text() for d in ("local", "aws") for p in (root / d).glob("*.json")}
    return sorted(str(p) for p in set(expected) | set(found) if expected.get(p) != found.get(p))


def write(root: Path = MESH_DIR) -> list[Path]:
    for directory in ("local", "aws"):
        for old in (root / directory).glob("*.json"):
            old.unlink()
    written = []
    for relative, content in rendered().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
