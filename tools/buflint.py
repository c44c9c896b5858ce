"""Runs `buf lint` offline on the descriptor image built by protogen.

The contracts import descriptors that live only in installed packages, so
buf lints the built image (a FileDescriptorSet) with the repository's
buf.yaml, rather than a source tree.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protogen


def main() -> int:
    buf = Path(sys.executable).parent / "buf"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "bmc.binpb"
        protogen.generate(Path(tmp) / "gen", image)
        result = subprocess.run(
            [str(buf), "lint", str(image), "--config", str(protogen.ROOT / "buf.yaml")], check=False
        )
    if result.returncode == 0:
        print("buf lint: clean")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
