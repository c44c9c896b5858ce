"""The service-level objectives' alert rules (ops/prometheus/slo-rules.yml)
pass Prometheus' own checks, every alert is unit-tested by promtool with
series that must fire it and series that must not, and the AWS estate's
CloudWatch alarms express the same objectives."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).parents[2] / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: Debian's prometheus (make setup)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_the_rules_are_valid() -> None:
    checked = _promtool("check", "rules", "slo-rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_every_alert_fires_when_it_should_and_only_then() -> None:
    tested = _promtool("test", "rules", "slo-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load((RULES / "slo-rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load((RULES / "slo-rules.test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fired == set(), "alerts never seen firing"
    assert alerts - silent == set(), "alerts never seen holding their fire"
    for alert in alerts:
        rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)
        assert rule["labels"].get("slo"), f"{alert} names no objective"


@needs_promtool
def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m])\n")
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    assert checked.returncode != 0


def test_the_cloudwatch_alarms_express_the_same_objectives() -> None:
    """Every objective of the Prometheus rules has a CloudWatch alarm tagged
    with it in the AWS estate, and no alarm names an objective the rules lack."""
    rules = yaml.safe_load((RULES / "slo-rules.yml").read_text())
    objectives = {rule["labels"]["slo"] for g in rules["groups"] for rule in g["rules"] if "alert" in rule}
    terraform = (
        Path(__file__).parents[2] / "infra" / "terraform" / "modules" / "observability" / "main.tf"
    ).read_text()
    alarms = re.findall(r'resource "aws_cloudwatch_metric_alarm" "(\w+)" \{(.*?)\n\}', terraform, flags=re.S)
    tagged = {name: re.search(r'tags\s*=\s*\{\s*slo\s*=\s*"([\w-]+)"', body) for name, body in alarms}
    in_aws = {found[1] for found in tagged.values() if found}
    assert len(alarms) >= 10, "the alarms are read"
    assert objectives == in_aws, f"only in Prometheus: {objectives - in_aws}; only in CloudWatch: {in_aws - objectives}"
