"""The README's commands, run as written against a running platform: the
operators' grpcurl block and the REST block's first calls, through the edge.
Only the deployment's own values are substituted (this platform's data
directory for `.bmc/` and its edge ports for 8443/8444); placeholders a
reader fills in (`@invoice.json`, `ID`) are left out."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import ROOT, Platform
from tests.integration.invoice_helpers import load_sample_catalog

pytestmark = pytest.mark.e2e
README = ROOT / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)


def _block_with(marker: str) -> str:
    found = [block for block in _blocks() if marker in block]
    assert len(found) == 1, f"one README block with {marker!r}"
    return found[0]


def _as_deployed(script: str, platform: Platform) -> str:
    edge = platform.settings.edge_port
    script = script.replace("localhost:8444", f"localhost:{edge + 1}").replace("localhost:8443", f"localhost:{edge}")
    return script.replace("$PWD/.bmc/", f"{platform.settings.data_dir}/").replace(
        ".bmc/", f"{platform.settings.data_dir}/"
    )


def _run(script: str, platform: Platform) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMC_")} | platform.settings.as_environment()
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_the_operators_grpcurl_block_works_through_the_edge(platform: Platform) -> None:
    load_sample_catalog(platform.settings)
    script = _as_deployed(_block_with("bmc mesh operator"), platform)
    ran = _run(script, platform)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for service in ("InvoiceService", "ProductService", "OcrService", "CommissionService", "CertificateService"):
        assert service in ran.stdout
    assert "service ProductService {" in ran.stdout, "describe"
    assert '"name": "products/MAIZ-AMARILLO"' in ran.stdout, "GetProduct"
    assert '"status": "SERVING"' in ran.stdout, "one service's health through the mesh"


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_the_rest_blocks_first_calls_work_through_the_edge(platform: Platform) -> None:
    load_sample_catalog(platform.settings)
    lines = _block_with("CURL_CA_BUNDLE").splitlines()
    first_placeholder = next(n for n, line in enumerate(lines) if "@" in line)  # `-d @invoice.json` onwards
    script = _as_deployed("\n".join(line for line in lines[:first_placeholder] if "bmc up" not in line), platform)
    ran = _run(script, platform)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"code":"CAFE-PERGAMINO"' in ran.stdout.replace(" ", ""), ran.stdout


def test_no_readme_command_bypasses_the_edge() -> None:
    """Service ports and plaintext grpcurl appear only in the --no-mesh paragraph."""
    text = README.read_text()
    debugging = text[text.index("**Without the mesh**") : text.index("## Product catalog")]
    rest = text.replace(debugging, "")
    assert "-plaintext" not in rest
    assert not re.search(r"localhost:5005\d", rest), "a service port outside the --no-mesh paragraph"
