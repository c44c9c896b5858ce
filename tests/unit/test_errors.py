"""Typed errors → google.rpc.Status, and protovalidate paths → BadRequest fields."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, error_details_pb2

from bmc.common.v1 import party_pb2
from bmc.invoice.v1 import invoice_pb2, invoice_service_pb2
from bmc.product.v1 import product_service_pb2
from services.kit.errors import (
    MAX_VIOLATIONS,
    FieldViolation,
    InvalidArgument,
    NotFound,
    from_remote,
    internal_status,
    to_status,
)
from services.kit.validation import RequestValidator


def test_invalid_argument_carries_bad_request_and_error_info() -> None:
    status = to_status(
        InvalidArgument(
            "bad",
            reason="NIT_CHECK_DIGIT",
            violations=[FieldViolation("seller.id.check_digit", "expected 4", "NIT_DV")],
        )
    )
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(bad)
    assert status.details[1].Unpack(info)
    assert (bad.field_violations[0].field, bad.field_violations[0].reason) == ("seller.id.check_digit", "NIT_DV")
    assert (info.reason, info.domain) == ("NIT_CHECK_DIGIT", "bmc.registry")


def test_thousands_of_violations_are_listed_up_to_a_bound_then_counted() -> None:
    violations = [FieldViolation(f"names[{n}]", "must not be empty", "REQUIRED") for n in range(5000)]
    status = to_status(InvalidArgument("bad", violations=violations))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert len(bad.field_violations) == MAX_VIOLATIONS + 1
    assert bad.field_violations[MAX_VIOLATIONS - 1].field == f"names[{MAX_VIOLATIONS - 1}]"
    assert bad.field_violations[-1].reason == "TRUNCATED"
    assert f"{5000 - MAX_VIOLATIONS:,} more" in bad.field_violations[-1].description
    assert len(status.SerializeToString()) < 16 * 1024, "small enough for any client's metadata limit"


def test_codes_follow_the_exception_type() -> None:
    assert to_status(NotFound("no such invoice", reason="INVOICE_NOT_FOUND")).code == grpc.StatusCode.NOT_FOUND.value[0]


def test_internal_status_leaks_nothing_but_an_incident_id() -> None:
    status = internal_status("abc123")
    assert status.code == code_pb2.INTERNAL
    assert status.message == "internal error (incident abc123)"


def test_validator_reports_every_violation_with_indexed_paths() -> None:
    request = invoice_service_pb2.BatchRegisterInvoicesRequest(
        requests=[
            invoice_service_pb2.RegisterInvoiceRequest(),
            invoice_service_pb2.RegisterInvoiceRequest(
                invoice=invoice_pb2.Invoice(
                    seller=party_pb2.Party(
                        id=party_pb2.PartyId(type=party_pb2.IDENTIFICATION_TYPE_NIT, number="80019726")
                    ),
                )
            ),
        ]
    )
    fields = {v.field: v.reason for v in RequestValidator().violations(request)}
    assert fields["requests[0].invoice"] == "required"
    assert fields["requests[1].invoice.seller.id"] == "party_id.nit_check_digit_required"
    assert fields["requests[1].invoice.number"] == "string.pattern"


def test_validator_accepts_a_valid_request() -> None:
    assert RequestValidator().violations(product_service_pb2.GetProductRequest(name="products/CAFE-PERGAMINO")) == []


def test_an_error_from_another_service_keeps_its_code_and_reason() -> None:
    status = to_status(NotFound("invoice x not found", reason="INVOICE_NOT_FOUND", metadata={"name": "x"}))
    remote = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="invoice x not found",
    )
    error = from_remote(remote)
    assert isinstance(error, NotFound)
    assert (error.reason, dict(error.metadata), error.message) == (
        "INVOICE_NOT_FOUND",
        {"name": "x"},
        "invoice x not found",
    )
    unmapped = grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert from_remote(unmapped) is None
