"""The `ProductService` servicer: maps protos to the domain and back.

Until issue #3 implements it, every RPC answers UNIMPLEMENTED (the
generated base class raises `NotImplementedError`, which the kit maps),
after authentication, authorisation and validation have run.
"""

from __future__ import annotations

from bmc.product.v1 import product_service_pb2_grpc


class ProductApi(product_service_pb2_grpc.ProductServiceServicer):
    """RPCs of `bmc.product.v1.ProductService`."""
