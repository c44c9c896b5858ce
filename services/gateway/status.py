"""gRPC status → HTTP: grpc-gateway v2's `HTTPStatusFromCode` table (the same
as Envoy's `grpcToHttpStatus`), and the error body as `google.rpc.Status`
JSON with its details, `code` being the gRPC code."""

from __future__ import annotations

import grpc
import orjson
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from services.kit.errors import FieldViolation, bad_request, error_info

DOMAIN = "gateway.bmc.com.co"
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,  # deliberately not 412, as grpc-gateway explains
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}
DETAILS_TRAILER = "grpc-status-details-bin"


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 500)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The callee's full status: from its details trailer when present."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_TRAILER and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code == error.code().value[0]:
                return status
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


def gateway_status(
    code: int, message: str, reason: str, field: str = "", metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    """An error the gateway itself answers, shaped like a service's."""
    details = [error_info(reason, metadata or {}, DOMAIN)]
    if field:
        details.append(bad_request([FieldViolation(field, message)]))
    return status_pb2.Status(code=code, message=message, details=details)


def status_json(status: status_pb2.Status) -> bytes:
    try:
        return orjson.dumps(json_format.MessageToDict(status))
    except (json_format.Error, TypeError, KeyError):  # a detail type this gateway does not know
        return orjson.dumps({"code": code_pb2.INTERNAL, "message": "failed to marshal error message"})
