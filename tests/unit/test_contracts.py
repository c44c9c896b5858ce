"""The contracts: complete, linted, and in step with the generated code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from bmc.auth.v1 import policy_pb2
from services.kit.topology import SERVICES
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import protogen

for _spec in SERVICES.values():  # load every contract into the default pool
    _ = _spec.descriptor

METHODS = [(spec.full_name, m) for spec in SERVICES.values() for m in spec.descriptor.methods]


def _rules(method: object) -> list[http_pb2.HttpRule]:
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]  # type: ignore[attr-defined]
    return [rule, *rule.additional_bindings]


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s.rsplit('.', 1)[1]}.{m.name}" for s, m in METHODS])
def test_every_rpc_has_an_http_rule_and_a_policy(service: str, method: object) -> None:
    options = method.GetOptions()  # type: ignore[attr-defined]
    assert options.HasExtension(annotations_pb2.http), "no google.api.http binding"
    for rule in _rules(method):
        assert rule.WhichOneof("pattern") in {"get", "post", "patch", "put", "delete"}
        assert getattr(rule, rule.WhichOneof("pattern")).startswith("/v1/")
    assert options.HasExtension(policy_pb2.policy), "no bmc.auth.v1.policy: the kit would refuse every caller"
    policy = options.Extensions[policy_pb2.policy]
    assert policy.roles, "a policy must name at least one role"


def test_http_routes_are_unique() -> None:
    seen: dict[tuple[str, str], str] = {}
    for service, method in METHODS:
        for rule in _rules(method):
            verb = rule.WhichOneof("pattern")
            key = (verb, getattr(rule, verb))
            assert key not in seen, f"{key} bound by {seen[key]} and {method.name}"
            seen[key] = f"{service}.{method.name}"


def test_enums_start_with_unspecified_and_money_is_never_floating_point() -> None:
    """Amounts are decimal strings; float/double fields are allowed only for
    geometry and confidences in the OCR contract."""
    pool = descriptor_pool.Default()
    checked = 0
    for name in protogen.contract_files():
        for message in pool.FindFileByName(name).message_types_by_name.values():
            checked += 1
            for field in message.fields:
                if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
                    assert name.startswith("bmc/ocr/"), f"{message.full_name}.{field.name} is floating point"
                    assert "amount" not in field.name
                    assert "price" not in field.name
        for enum in pool.FindFileByName(name).enum_types_by_name.values():
            assert enum.values[0].number == 0
            assert enum.values[0].name.endswith("_UNSPECIFIED")
    assert checked > 50


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "protogen.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_staleness_is_detected(tmp_path: Path) -> None:
    """Editing a contract without regenerating must be caught."""
    proto = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto)
    party = proto / "bmc" / "common" / "v1" / "party.proto"
    party.write_text(
        party.read_text().replace("  string legal_name = 2", "  string trade_name = 4;\n  string legal_name = 2")
    )
    protogen.generate(tmp_path / "gen", tmp_path / "image.binpb", proto)
    stale = protogen.stale_files(ROOT / "gen", tmp_path / "gen")
    assert "bmc/common/v1/party_pb2.py" in stale


def test_buf_lint_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "buflint.py")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_violations(tmp_path: Path) -> None:
    proto = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto)
    (proto / "bmc" / "common" / "v1" / "bad.proto").write_text(
        'syntax = "proto3";\npackage bmc.common.v1;\nenum Color { RED = 0; }\n'
    )
    protogen.generate(tmp_path / "gen", tmp_path / "image.binpb", proto)
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run(
        [str(buf), "lint", str(tmp_path / "image.binpb"), "--config", str(ROOT / "buf.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert 'Enum zero value name "RED" should be suffixed with "_UNSPECIFIED"' in result.stdout
