"""The `InvoiceService` servicer: maps protos to the domain and back.

Until issue #4 implements it, every RPC answers UNIMPLEMENTED (the
generated base class raises `NotImplementedError`, which the kit maps),
after authentication, authorisation and validation have run.
"""

from __future__ import annotations

from bmc.invoice.v1 import invoice_service_pb2_grpc


class InvoiceApi(invoice_service_pb2_grpc.InvoiceServiceServicer):
    """RPCs of `bmc.invoice.v1.InvoiceService`."""
