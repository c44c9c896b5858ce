"""Typed errors every layer raises, and their one mapping to `google.rpc.Status`.

Domain and store code raise these; the kit's error interceptor (and the
security and validation interceptors, which run before it) turn them into a
gRPC status with `google.rpc` details: `BadRequest` field violations for bad
input, `ErrorInfo` with a stable reason for everything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "bmc.registry"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request and why it is bad."""

    field: str
    description: str
    reason: str = ""


def error_info(reason: str, metadata: Mapping[str, str], domain: str = ERROR_DOMAIN) -> any_pb2.Any:
    """An `ErrorInfo` detail, packed."""
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata)))
    return packed


MAX_VIOLATIONS = 100


def bad_request(violations: Sequence[FieldViolation]) -> any_pb2.Any:
    """A `BadRequest` detail naming the bad fields, packed: the first
    MAX_VIOLATIONS of them, then one saying how many more there are. The
    details travel in a trailer, and proxies and clients cap those (Envoy at
    60 KiB, many gRPC clients at 8 KiB): a request with thousands of bad
    items must still get its answer."""
    listed = [
        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description, reason=v.reason)
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        more = len(violations) - MAX_VIOLATIONS
        listed.append(
            error_details_pb2.BadRequest.FieldViolation(
                description=f"{more:,} more violations not listed (at most {MAX_VIOLATIONS} are)", reason="TRUNCATED"
            )
        )
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.BadRequest(field_violations=listed))
    return packed


@dataclass
class ServiceError(Exception):
    """Base of every error a service reports to its caller on purpose."""

    message: str
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def details(self) -> list[any_pb2.Any]:
        return [error_info(self.reason, self.metadata)] if self.reason else []


@dataclass
class InvalidArgument(ServiceError):
    """The request is malformed; `violations` names every bad field."""

    violations: Sequence[FieldViolation] = ()
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INVALID_ARGUMENT

    def details(self) -> list[any_pb2.Any]:
        return ([bad_request(self.violations)] if self.violations else []) + super().details()


@dataclass
class NotFound(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.NOT_FOUND


@dataclass
class AlreadyExists(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.ALREADY_EXISTS


@dataclass
class FailedPrecondition(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class Aborted(ServiceError):
    """A concurrent change won; the caller may retry with fresh data."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.ABORTED


@dataclass
class ResourceExhausted(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class Unauthenticated(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class PermissionDenied(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Unavailable(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNAVAILABLE


@dataclass
class DataLoss(ServiceError):
    """Stored data no longer matches what was recorded."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.DATA_LOSS


@dataclass
class Unimplemented(ServiceError):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNIMPLEMENTED


def to_status(error: ServiceError) -> status_pb2.Status:
    """The `google.rpc.Status` a caller receives for `error`."""
    code_number: int = error.code.value[0]
    return status_pb2.Status(code=code_number, message=error.message, details=error.details())


def internal_status(incident: str) -> status_pb2.Status:
    """What a caller sees of an unexpected failure: an incident id to quote, nothing internal."""
    detail = error_info("INTERNAL_ERROR", {"incident": incident})
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error (incident {incident})", details=[detail])


async def abort(context: grpc.aio.ServicerContext[object, object], status: status_pb2.Status) -> NoReturn:
    """Ends the RPC with `status`, its details in `grpc-status-details-bin`."""
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def from_remote(error: grpc.aio.AioRpcError) -> ServiceError | None:
    """The typed error another service answered with (its reason and
    metadata kept), so a caller can handle it as if raised locally; None for
    codes with no typed error."""
    kinds = {cls.code: cls for cls in ServiceError.__subclasses__() if cls is not InvalidArgument}
    kind = kinds.get(error.code())
    if kind is None:
        return None
    reason, metadata = "", {}
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
    return kind(error.details() or "", reason=reason, metadata=metadata)
