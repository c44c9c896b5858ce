"""The AWS estate (`infra/terraform/`) checked offline against the real AWS
provider schema: `terraform fmt`, `init` + `validate` of each environment
(with the committed lock file, read-only) and `terraform test` of the
modules with a mocked provider. The provider comes from a local filesystem
mirror (`BMC_TF_MIRROR`, default /opt/tf-plugins); nothing is downloaded.
Where Terraform or the mirror is absent, the tests skip and say so."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

TERRAFORM = ROOT / "infra" / "terraform"
MIRROR = Path(os.environ.get("BMC_TF_MIRROR", "/opt/tf-plugins"))
ENVIRONMENTS = sorted(p.name for p in (TERRAFORM / "envs").iterdir() if p.is_dir())
TESTED_MODULES = sorted(p.parent.name for p in TERRAFORM.glob("modules/*/tests"))


@pytest.fixture(scope="module")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment a terraform command runs in: a CLI configuration that
    installs the AWS provider only from the mirror, through a plugin cache."""
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform CLI on this machine")
    if not (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.skip(f"no AWS provider mirror at {MIRROR} (set BMC_TF_MIRROR)")
    home = tmp_path_factory.mktemp("terraform")
    (home / "cache").mkdir()
    config = home / "terraform.rc"
    config.write_text(
        f'plugin_cache_dir = "{home / "cache"}"\n'
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{MIRROR}"\n    include = ["registry.terraform.io/hashicorp/*"]\n  }}\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/*"]\n  }\n'
        "}\n"
    )
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}


def _run(env: dict[str, str], where: Path, *args: str, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"TF_DATA_DIR": str(data)} if data else {}
    return subprocess.run(
        ["terraform", *args, "-no-color"], cwd=where, env={**env, **extra},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _init(env: dict[str, str], directory: Path, data: Path) -> None:
    # -lockfile=readonly: the committed lock file must already pin the provider.
    ran = _run(env, directory, "init", "-backend=false", "-input=false", "-lockfile=readonly", data=data)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_file_is_formatted(terraform: dict[str, str]) -> None:
    ran = _run(terraform, TERRAFORM, "fmt", "-recursive", "-check", "-diff")
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_environment_validates_against_the_aws_provider_schema(
    terraform: dict[str, str], environment: str, tmp_path: Path
) -> None:
    directory = TERRAFORM / "envs" / environment
    _init(terraform, directory, tmp_path)
    ran = _run(terraform, directory, "validate", data=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_environments_differ_only_in_their_values() -> None:
    """Every root is the same configuration (envs/dev's files, linked); only terraform.tfvars differs."""
    assert {"dev", "prod"} <= set(ENVIRONMENTS)
    for name in ("main.tf", "variables.tf"):
        assert len({(TERRAFORM / "envs" / env / name).resolve() for env in ENVIRONMENTS}) == 1, name
    for env in ENVIRONMENTS:
        files = {p.name for p in (TERRAFORM / "envs" / env).iterdir() if not p.name.startswith(".")}
        assert files == {"main.tf", "variables.tf", "terraform.tfvars"}, env
        assert f'environment             = "{env}"' in (TERRAFORM / "envs" / env / "terraform.tfvars").read_text()


@pytest.mark.parametrize("module", TESTED_MODULES)
def test_the_modules_properties_hold_on_a_mocked_plan(terraform: dict[str, str], module: str, tmp_path: Path) -> None:
    directory = TERRAFORM / "modules" / module
    _init(terraform, directory, tmp_path)
    ran = _run(terraform, directory, "test", data=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "0 failed" in ran.stdout
