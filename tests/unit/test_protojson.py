"""The fast message-to-dict matches protobuf's own JSON mapping where it is used."""

from __future__ import annotations

import datetime as dt

from google.protobuf import json_format
from google.protobuf.message import Message

from bmc.invoice.v1 import invoice_pb2
from services.invoice.synth import invoices
from services.kit.protojson import json_plan, to_dict, to_json_dict


def test_invoices_convert_exactly_like_message_to_dict() -> None:
    for proto in invoices(50, dt.date(2026, 11, 28), seed=3):
        proto.broker = "brokers/acme"
        proto.state = invoice_pb2.INVOICE_STATE_REGISTERED
        proto.version = 3
        proto.register_time.FromDatetime(dt.datetime(2026, 11, 28, 12, 0, 1, 123456))
        assert to_dict(proto) == json_format.MessageToDict(proto, preserving_proto_field_name=True)
        assert json_format.ParseDict(to_dict(proto), invoice_pb2.Invoice()) == proto


def test_gateway_json_matches_message_to_dict_with_zero_values() -> None:
    from bmc.certificate.v1 import certificate_pb2
    from bmc.product.v1 import product_pb2, product_service_pb2

    messages: list[Message] = [invoice_pb2.Invoice(), product_pb2.Product(), certificate_pb2.Certificate()]
    for proto in invoices(20, dt.date(2026, 11, 28), seed=5):
        proto.version = 2**60
        proto.register_time.FromDatetime(dt.datetime(2026, 11, 28, 12, 0, 1, 5))
        messages.append(proto)
    batch = product_service_pb2.BatchGetProductsResponse(missing=["products/X"])
    batch.products.add(name="products/A", revision=7, category=product_pb2.CATEGORY_LIVESTOCK)
    messages.append(batch)
    for message in messages:
        assert json_plan(message.DESCRIPTOR) is not None, message.DESCRIPTOR.full_name
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert to_json_dict(message) == expected


def test_types_the_compiled_path_does_not_cover_are_left_to_protobuf() -> None:
    from google.longrunning import operations_pb2
    from google.rpc import status_pb2

    from bmc.ocr.v1 import ocr_pb2

    for descriptor in (
        operations_pb2.Operation.DESCRIPTOR,
        status_pb2.Status.DESCRIPTOR,
        ocr_pb2.Extraction.DESCRIPTOR,
    ):
        assert json_plan(descriptor) is None  # Any, floats
