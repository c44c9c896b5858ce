"""Certificate files stored without their record: a crash between storing
the signed PDF and committing its certificate leaves the file behind (the
certificate was never issued: its event and record do not exist, and the
issue is retried from the commission event, producing a new file). Files
no certificate refers to are removed once older than any issue in flight."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import structlog

from services.certificate.store import CertificateStore
from services.kit.background import cancel
from services.kit.leadership import while_leader
from services.kit.objects import ObjectStore

log = structlog.get_logger("bmc.certificate.debris")


async def sweep(objects: ObjectStore, store: CertificateStore, older_than: dt.timedelta) -> int:
    """Removes the files older than `older_than` no certificate refers to; how many."""
    cutoff = dt.datetime.now(dt.UTC) - older_than
    listing = iter(await asyncio.to_thread(lambda: [d for d, written in objects.listing() if written < cutoff]))
    removed = 0
    while chunk := list(itertools.islice(listing, 1000)):
        referenced = await store.referenced(chunk)
        for digest in chunk:
            if digest not in referenced:
                await asyncio.to_thread(objects.delete, digest)
                removed += 1
    if removed:
        log.warning("certificate files without a record removed", files=removed)
    return removed


class DebrisSweeper:
    """Sweeps every `interval` seconds on one worker of the service."""

    def __init__(self, objects: ObjectStore, store: CertificateStore, interval: float = 3600.0) -> None:
        self._objects, self._store, self._interval = objects, store, interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def periodically(_leader: Any) -> None:
            while True:
                await sweep(self._objects, self._store, dt.timedelta(hours=1))
                await asyncio.sleep(self._interval)

        self._task = asyncio.create_task(
            while_leader(self._store.pool, "certificate:debris", periodically), name="certificate-debris"
        )

    async def stop(self) -> None:
        await cancel(self._task)
