"""The ADOT collector's configuration (ops/otel/adot-collector.yaml) against
what it serves: every BMC/* metric a CloudWatch alarm reads
(infra/terraform/modules/observability) is made by one of its transforms,
in the alarm's namespace and with the alarm's dimensions, and kept by its
pipeline; and every series those transforms start from is one the running
services or their Envoy sidecars really serve. No collector runs here (it
is a Go binary AWS ships as an image), so this is what can be checked."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import services.kit.metrics  # noqa: F401 - registers the families
from tests.conftest import ROOT, Platform
from tests.integration.clients import wait_until

CONFIG = yaml.safe_load((ROOT / "ops" / "otel" / "adot-collector.yaml").read_text())
ALARMS_TF = (ROOT / "infra" / "terraform" / "modules" / "observability" / "main.tf").read_text()
CONSUMERS_TF = (ROOT / "infra" / "terraform" / "modules" / "observability" / "variables.tf").read_text()
TRANSFORMS: list[dict[str, Any]] = CONFIG["processors"]["metricstransform/cloudwatch"]["transforms"]


def _alarmed() -> dict[tuple[str, str], set[str]]:
    """(namespace, metric) of every BMC/* metric an alarm reads, with its dimension names."""
    found: dict[tuple[str, str], set[str]] = {}
    pattern = (
        r'namespace\s*=\s*"(BMC/[^"]+)"\s*\n\s*metric_name\s*=\s*"([^"]+)"'
        r"(?:\s*\n\s*dimensions\s*=\s*\{([^}]*)\})?"
    )
    for namespace, metric, dimensions in re.findall(pattern, ALARMS_TF):
        found[namespace, metric] = set(re.findall(r"(\w+)\s*=", dimensions or ""))
    return found


def _sources(transform: dict[str, Any], names: set[str]) -> set[str]:
    if transform.get("match_type") == "regexp":
        return {n for n in names if re.search(transform["include"], n)}
    return {transform["include"]} & names


def test_the_alarms_read_bmc_metrics() -> None:
    assert len(_alarmed()) == 7, _alarmed()


@pytest.mark.parametrize(("namespace", "metric"), sorted(_alarmed()))
def test_every_alarmed_metric_is_made_and_shipped_to_its_namespace(namespace: str, metric: str) -> None:
    made = [t for t in TRANSFORMS if t.get("new_name") == metric]
    assert made, f"no transform makes {metric}"
    assert all(t["action"] == "insert" for t in made)
    exporters = {
        name: exporter
        for name, exporter in CONFIG["exporters"].items()
        if name.startswith("awsemf") and exporter["namespace"] == namespace
    }
    declared = [
        d
        for exporter in exporters.values()
        for d in exporter["metric_declarations"]
        if any(re.search(selector, metric) for selector in d["metric_name_selectors"])
    ]
    assert declared, f"no awsemf exporter declares {metric} in {namespace}"
    assert [set(dimensions) for dimensions in declared[0]["dimensions"]] == [_alarmed()[namespace, metric]], (
        "the exporter's dimensions are the alarm's"
    )
    shipping = [
        pipeline for pipeline in CONFIG["service"]["pipelines"].values() if set(pipeline["exporters"]) & set(exporters)
    ]
    assert shipping, f"no pipeline exports to {namespace}"
    for pipeline in shipping:
        assert pipeline["processors"][0] == "metricstransform/cloudwatch"
        kept = {
            name
            for processor in pipeline["processors"]
            if processor.startswith("filter/")
            for name in CONFIG["processors"][processor]["metrics"]["include"]["metric_names"]
        }
        assert metric in kept, f"the {namespace} pipeline's filter drops {metric}"


def test_the_services_serve_every_bmc_series_the_collector_starts_from() -> None:
    served = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("bmc_")
    }
    for transform in TRANSFORMS:
        if transform["include"].startswith("bmc_"):
            assert _sources(transform, served), f"{transform['include']} is no metric of services/kit/metrics.py"


def _sidecar_series(platform: Platform) -> set[str]:
    """The series names every sidecar serves, as written (prometheus-client's
    parser would add `_total` to Envoy's counters, which the collector and
    Prometheus see without it)."""
    assert platform.cluster.sidecars is not None
    names: set[str] = set()
    for port in platform.cluster.sidecars.admin_ports().values():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5) as response:
            names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", response.read().decode(), re.M))
    return names


def test_the_sidecars_serve_every_envoy_series_the_collector_starts_from(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("the sidecars' stats do not depend on the backend")
    served = _sidecar_series(platform)
    for transform in TRANSFORMS:
        if transform["include"].lstrip("^").startswith("envoy_"):
            assert _sources(transform, served), f"no sidecar serves {transform['include']}"


def test_each_watched_consumer_is_a_real_group_and_named_as_the_alarm_names_it(platform: Platform) -> None:
    if platform.backend != "embedded":
        pytest.skip("the consumer groups do not depend on the backend")
    watched = re.search(r'variable "consumers".*?default\s*=\s*\[([^\]]*)\]', CONSUMERS_TF, re.S)
    assert watched is not None
    pairs = {tuple(c.split("-from-")) for c in re.findall(r'"([^"]+)"', watched.group(1))}
    lag = next(t for t in TRANSFORMS if t.get("new_name") == "ConsumerLagSeconds")
    renames = {op["label"]: op for op in lag["operations"]}
    assert (renames["group"]["new_label"], renames["stream"]["new_label"]) == ("Consumer", "Source")
    sources = {a["value"]: a["new_value"] for a in renames["stream"]["value_actions"]}

    def sampled() -> set[tuple[str, str]]:
        """(group, stream) of the lag series the producers' relays report now."""
        found: set[tuple[str, str]] = set()
        for _, address in platform.cluster.scrape_targets()["services"]:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
                for family in text_string_to_metric_families(response.read().decode()):
                    if family.name == lag["include"]:
                        found |= {(s.labels["group"], s.labels["stream"]) for s in family.samples}
        return found

    wait_until(lambda: len(sampled()) >= len(pairs), 30, "every consumer group's lag reported")
    for group, stream in sampled():
        assert (group, sources.get(stream, "")) in pairs, f"{group} on {stream}: no alarm would watch it"
    assert pairs <= {(group, sources.get(stream, "")) for group, stream in sampled()}
