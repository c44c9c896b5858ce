"""Fault injection on a cluster's real processes: freezing them (SIGSTOP
until SIGCONT), and finding the embedded servers' processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from services.cli.cluster import Cluster


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """The processes stopped for the block's duration, as a hung host would be."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def server_pids(cluster: Cluster, server: str) -> list[int]:
    """The processes of an embedded server (`redis`, or `postgresql`: the postmaster and its backends)."""
    assert cluster.infrastructure is not None
    main = psutil.Process(cluster.infrastructure.server_pids[server])
    return [main.pid, *(child.pid for child in main.children(recursive=True))]


def service_pids(cluster: Cluster, service: str) -> list[int]:
    return [process.pid for process in cluster.processes[service]]
