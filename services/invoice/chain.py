"""The SHA-256 hash chain over every event of the store.

Each event's hash covers its canonical form and the previous event's hash,
so changing, removing or reordering any stored event breaks every link
after it, and re-walking the chain finds the first broken one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64


def timestamp(moment: dt.datetime) -> str:
    """A fixed-width UTC form, stable through a database round trip."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 as is (amounts are strings: no floats)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class ChainedEvent:
    position: int
    event_id: str
    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    record_time: dt.datetime
    prev_hash: str
    hash: str = ""

    def body(self) -> str:
        return canonical(
            {
                "position": self.position,
                "event_id": self.event_id,
                "stream_id": self.stream_id,
                "version": self.version,
                "type": self.type,
                "data": self.data,
                "metadata": self.metadata,
                "record_time": timestamp(self.record_time),
            }
        )

    def computed_hash(self) -> str:
        return hashlib.sha256((self.prev_hash + self.body()).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    intact: bool
    checked: int
    first_broken_position: int = 0
    detail: str = ""
    head_hash: str = GENESIS


class ChainWalk:
    """Checks events one at a time in position order, so that a chain of any
    length is verified in constant memory; stops at the first broken link."""

    def __init__(self, expected_prev: str = GENESIS, expected_position: int = 1) -> None:
        self.previous, self.position, self.checked = expected_prev, expected_position, 0
        self.broken: ChainReport | None = None

    def step(self, event: ChainedEvent) -> bool:
        """Checks the next event; False once a link is broken."""
        self.checked += 1
        if event.position != self.position:
            detail = f"event {self.position} is missing (found {event.position})"
            self.broken = ChainReport(False, self.checked, self.position, detail, self.previous)
        elif event.prev_hash != self.previous:
            detail = "prev_hash does not match the previous event"
            self.broken = ChainReport(False, self.checked, event.position, detail, self.previous)
        elif event.computed_hash() != event.hash:
            detail = "content does not match its hash (altered)"
            self.broken = ChainReport(False, self.checked, event.position, detail, self.previous)
        else:
            self.previous = event.hash
            self.position += 1
        return self.broken is None

    def report(self) -> ChainReport:
        return self.broken or ChainReport(True, self.checked, 0, "", self.previous)


def verify(events: Iterable[ChainedEvent], expected_prev: str = GENESIS, expected_position: int = 1) -> ChainReport:
    """Re-walks events in position order and reports the first broken link."""
    walk = ChainWalk(expected_prev, expected_position)
    for event in events:
        if not walk.step(event):
            break
    return walk.report()
