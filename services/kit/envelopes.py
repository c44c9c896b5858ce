"""An event as it travels: on a Redis stream (one JSON envelope per entry),
and in a producer's feed (`bmc.common.v1.PublishedEvent`), which consumers
read to catch up when the stream lost entries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format

from bmc.common.v1 import events_pb2


@dataclass(frozen=True)
class Event:
    """An event as it travels on a stream."""

    event_id: str
    type: str
    stream_id: str
    version: int
    position: int
    tenant: str
    trace_id: str
    data: Mapping[str, Any]
    time: str = ""  # when the event was recorded, RFC 3339

    @property
    def occurred(self) -> dt.datetime:
        """The record time (now, for an event that does not carry one)."""
        return dt.datetime.fromisoformat(self.time) if self.time else dt.datetime.now(dt.UTC)

    def fields(self) -> dict[str, bytes]:
        """The stream entry: the event type (for filtering with XRANGE by eye)
        and one JSON envelope with everything, the payload included."""
        return {"type": self.type.encode(), "event": self.envelope()}

    def envelope(self) -> bytes:
        return envelope(self._header(), orjson.dumps(self.data))

    def _header(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "stream_id": self.stream_id,
            "version": self.version,
            "position": self.position,
            "tenant": self.tenant,
            "trace_id": self.trace_id,
            "time": self.time,
        }

    @classmethod
    def from_envelope(cls, body: bytes) -> Event:
        e = orjson.loads(body)
        return cls(
            event_id=e["event_id"],
            type=e["type"],
            stream_id=e["stream_id"],
            version=int(e["version"]),
            position=int(e["position"]),
            tenant=e.get("tenant") or "",
            trace_id=e.get("trace_id") or "",
            data=e["data"],
            time=e.get("time") or "",
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """An event of a relay query's row (the columns of `Event`, `time` a datetime)."""
        data = row["data"]
        return cls(
            event_id=row["event_id"],
            type=row["type"],
            stream_id=row["stream_id"],
            version=int(row["version"]),
            position=int(row["position"]),
            tenant=row["tenant"] or "",
            trace_id=row["trace_id"] or "",
            data=orjson.loads(data) if isinstance(data, str) else data,
            time=row["time"].isoformat(),
        )

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> Event:
        return cls.from_envelope(fields[b"event"])


def envelope(header: Mapping[str, Any], data_json: bytes) -> bytes:
    """`header` as JSON with `"data": <data_json>` spliced in unparsed."""
    return orjson.dumps(header)[:-1] + b',"data":' + data_json + b"}"


def parse_envelope(body: bytes) -> Event | None:
    """The event of an envelope; None for what is not one."""
    try:
        event = Event.from_envelope(body)
    except (ValueError, KeyError, TypeError):
        return None
    return event if isinstance(event.data, Mapping) else None


def to_published(event: Event) -> events_pb2.PublishedEvent:
    proto = events_pb2.PublishedEvent(
        event_id=event.event_id,
        position=event.position,
        stream_id=event.stream_id,
        version=event.version,
        type=event.type,
        tenant=event.tenant,
        trace_id=event.trace_id,
    )
    proto.data.update(dict(event.data))
    proto.record_time.FromDatetime(event.occurred)
    return proto


def _exact(value: Any) -> Any:
    """A Struct's numbers are doubles: whole ones go back to integers, as
    the producer wrote them (amounts travel as decimal strings)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def from_feed(message: Any) -> Event:
    """An event of a producer's feed (a `PublishedEvent`, or an `InvoiceEvent`,
    whose aggregate is its invoice) as the stream would have carried it."""
    stream_id = getattr(message, "stream_id", "") or str(message.invoice).removeprefix("invoices/")
    return Event(
        event_id=message.event_id,
        type=message.type,
        stream_id=stream_id,
        version=int(message.version),
        position=int(message.position),
        tenant=message.tenant,
        trace_id=message.trace_id,
        data=_exact(json_format.MessageToDict(message.data)),
        time=message.record_time.ToDatetime(dt.UTC).isoformat(),
    )


def row_envelope(row: Mapping[str, Any]) -> bytes:
    """The stream envelope of an outbox row (orjson writes `time`, a
    datetime, as RFC 3339; the payload's JSON text passes through unparsed)."""
    header = {k: row[k] for k in Event.__dataclass_fields__ if k != "data"}
    data = row["data"]
    return envelope(header, data.encode() if isinstance(data, str) else orjson.dumps(data))
