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


def verify(events: Iterable[ChainedEvent], expected_prev: str = GENESIS, expected_position: int = 1) -> ChainReport:
    """Re-walks events in position order and reports the first broken link."""
    checked = 0
    previous = expected_prev
    position = expected_position
    for event in events:
        checked += 1
        if event.position != position:
            return ChainReport(
                False, checked, position, f"event {position} is missing (found {event.position})", previous
            )
        if event.prev_hash != previous:
            return ChainReport(False, checked, event.position, "prev_hash does not match the previous event", previous)
        if event.computed_hash() != event.hash:
            return ChainReport(False, checked, event.position, "content does not match its hash (altered)", previous)
        previous = event.hash
        position += 1
    return ChainReport(True, checked, 0, "", previous)
