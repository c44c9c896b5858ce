"""The `CertificateService` servicer: maps protos to the domain and back.

Until issue #6 implements it, every RPC answers UNIMPLEMENTED (the
generated base class raises `NotImplementedError`, which the kit maps),
after authentication, authorisation and validation have run.
"""

from __future__ import annotations

from bmc.certificate.v1 import certificate_service_pb2_grpc


class CertificateApi(certificate_service_pb2_grpc.CertificateServiceServicer):
    """RPCs of `bmc.certificate.v1.CertificateService`."""
