"""The `OcrService` servicer: maps protos to the domain and back.

Until issue #7 implements it, every RPC answers UNIMPLEMENTED (the
generated base class raises `NotImplementedError`, which the kit maps),
after authentication, authorisation and validation have run.
"""

from __future__ import annotations

from bmc.ocr.v1 import ocr_service_pb2_grpc


class OcrApi(ocr_service_pb2_grpc.OcrServiceServicer):
    """RPCs of `bmc.ocr.v1.OcrService`."""
