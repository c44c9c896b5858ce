"""The `CommissionService` servicer: maps protos to the domain and back.

Until issue #5 implements it, every RPC answers UNIMPLEMENTED (the
generated base class raises `NotImplementedError`, which the kit maps),
after authentication, authorisation and validation have run.
"""

from __future__ import annotations

from bmc.commission.v1 import commission_service_pb2_grpc


class CommissionApi(commission_service_pb2_grpc.CommissionServiceServicer):
    """RPCs of `bmc.commission.v1.CommissionService`."""
