"""The fast message-to-dict matches protobuf's own JSON mapping where it is used."""

from __future__ import annotations

import datetime as dt

from google.protobuf import json_format

from bmc.invoice.v1 import invoice_pb2
from services.invoice.synth import invoices
from services.kit.protojson import to_dict


def test_invoices_convert_exactly_like_message_to_dict() -> None:
    for proto in invoices(50, dt.date(2026, 11, 28), seed=3):
        proto.broker = "brokers/acme"
        proto.state = invoice_pb2.INVOICE_STATE_REGISTERED
        proto.version = 3
        proto.register_time.FromDatetime(dt.datetime(2026, 11, 28, 12, 0, 1, 123456))
        assert to_dict(proto) == json_format.MessageToDict(proto, preserving_proto_field_name=True)
        assert json_format.ParseDict(to_dict(proto), invoice_pb2.Invoice()) == proto
