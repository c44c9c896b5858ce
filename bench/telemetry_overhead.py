"""What metrics and traces cost registrations. Three platforms (the product
and invoice services each) run side by side in one run:

- telemetry off (`BMC_TELEMETRY=0`: no RPC metrics or endpoint, no
  instrumentation, no spans);
- on as deployed: metrics, every instrumentation, the default share of
  traces recorded (`BMC_TRACE_SAMPLE_RATIO`) and exported over OTLP;
- on, every trace recorded and exported (what a debugging session uses).

The same load is driven at each in turn, a few seconds at a time, round
after round, so that whatever else the machine does falls on all three
alike. Spans go to a collector in a process of its own (the tests'
in-memory one), as an ADOT sidecar has its own share of a task's CPUs.

    .venv/bin/python -m bench.telemetry_overhead [--rounds 4] [--seconds 4]

Each setting's table is against its own no-op baseline (a health check);
the last lines give on/off for single and batched registrations. The
target is a ratio of at least 0.9 as deployed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psutil

from bench.harness import Result, platform, summary
from bench.invoice_registration import Load, prepared
from services.cli.cluster import Cluster
from services.kit.settings import Settings
from tests.integration.invoice_helpers import load_sample_catalog


@contextmanager
def collector() -> Iterator[tuple[str, list[int]]]:
    """A collector process: its endpoint, and (once it stopped) how many spans it received."""
    process = subprocess.Popen([sys.executable, "-m", "services.cli.traces"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    received: list[int] = []
    try:
        yield process.stdout.readline().strip(), received
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
        received.append(int(out.strip() or 0))


def merged(results: list[Result]) -> Result:
    """The rounds of one measure as one result."""
    first = results[0]
    return Result(
        first.name,
        sum(r.calls for r in results),
        sum(r.errors for r in results),
        sum(r.seconds for r in results),
        [latency for r in results for latency in r.latencies_ms],
    )


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


async def interleaved(
    clusters: dict[str, Cluster], rounds: int, seconds: float
) -> tuple[dict[str, list[Result]], dict[str, float]]:
    """Each measure's merged result per setting, and the services' CPU
    milliseconds per single registration (the product and invoice processes'
    user and system time over the registrations: a figure the machine's other
    load does not move as it moves throughput)."""
    requests = prepared(30_000, 30_000 * rounds)  # each platform's own database takes the same requests
    loads = {title: Load(cluster.settings, requests) for title, cluster in clusters.items()}
    processes = {
        title: [psutil.Process(p.pid) for name in ("product", "invoice") for p in cluster.processes[name]]
        for title, cluster in clusters.items()
    }
    measured: dict[str, list[list[Result]]] = {title: [[], [], []] for title in clusters}
    cpu = dict.fromkeys(clusters, 0.0)
    for round_ in range(rounds):
        print(f"round {round_ + 1} of {rounds}", flush=True)
        for title, load in loads.items():
            measured[title][0].append(await load.health(seconds))
            before = _cpu(processes[title])
            measured[title][1].append(await load.singles(seconds))
            cpu[title] += _cpu(processes[title]) - before
            measured[title][2].append(await load.batches(seconds))
    for load in loads.values():
        await load.close()
    merged_results = {title: [merged(rounds_) for rounds_ in parts] for title, parts in measured.items()}
    per_registration = {title: 1000 * cpu[title] / merged_results[title][1].calls for title in clusters}
    return merged_results, per_registration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="of each measure in each round")
    args = parser.parse_args()
    default = Settings.model_fields["trace_sample_ratio"].default
    settings: dict[str, dict[str, object]] = {
        "telemetry off": {"telemetry": False},
        f"telemetry on, {default:.0%} of traces recorded (as deployed)": {},
        "telemetry on, every trace recorded": {"trace_sample_ratio": 1.0},
    }
    spans: dict[str, list[int]] = {}
    with ExitStack() as stack:
        clusters = {}
        for title, overrides in settings.items():
            exporting: dict[str, object] = {}
            if overrides.get("telemetry", True):
                endpoint, spans[title] = stack.enter_context(collector())
                exporting = {"otlp_endpoint": endpoint}
            clusters[title] = stack.enter_context(platform(["product", "invoice"], **overrides, **exporting))
            load_sample_catalog(clusters[title].settings)
        results, cpu = asyncio.run(interleaved(clusters, args.rounds, args.seconds))
    off = results["telemetry off"]
    for title, measured in results.items():
        registered = sum(r.calls for r in measured[1:])
        exported = spans.get(title, [0])[0]
        print(
            f"\n{title}: {exported:,} spans exported ({exported / registered:.2f} a registration); "
            f"the services' CPU per single registration {cpu[title]:.2f} ms"
        )
        print(summary(measured))
    for title, on in results.items():
        if on is not off:
            print(f"\n{title}")
            for before, after in zip(off[1:], on[1:], strict=True):
                ratio = after.rate / before.rate
                print(f"  {after.name:<44} on/off {ratio:5.2f}  ({before.rate:,.0f}/s off, {after.rate:,.0f}/s on)")
            extra, times = cpu[title] - cpu["telemetry off"], cpu[title] / cpu["telemetry off"]
            print(f"  services' CPU per single registration: +{extra:.2f} ms ({times:.2f}x)")


if __name__ == "__main__":
    main()
