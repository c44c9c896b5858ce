"""The `CertificateService` servicer: maps protos to the issuer and the store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from google.api import httpbody_pb2

from bmc.certificate.v1 import certificate_pb2, certificate_service_pb2, certificate_service_pb2_grpc
from services.certificate.domain import normalise_code
from services.certificate.issuing import Issuer
from services.certificate.store import CertificateStore
from services.kit.auth import acting_for, require_principal, tenant_scope
from services.kit.catchup import outbox_page
from services.kit.dead_letters import DeadLetterRpcs
from services.kit.errors import DataLoss, NotFound
from services.kit.events import OUTBOX_RELAY_QUERY
from services.kit.idempotency import RequestKeys, keyed
from services.kit.names import resource_id
from services.kit.objects import CorruptObject
from services.kit.paging import INSTANT, TEXT, list_page
from services.kit.telemetry import trace_context

CHUNK = 256 * 1024


def _id(name: str) -> str:
    return resource_id(name, "certificates")


class CertificateApi(DeadLetterRpcs, certificate_service_pb2_grpc.CertificateServiceServicer):
    """RPCs of `bmc.certificate.v1.CertificateService`."""

    def __init__(self, store: CertificateStore, issuer: Issuer, keys: RequestKeys) -> None:
        self._store, self._issuer, self.request_keys = store, issuer, keys

    async def _visible(self, name: str) -> certificate_pb2.Certificate:
        found = await self._store.get(_id(name), tenant_scope(require_principal()))
        if found is None:
            raise NotFound(f"{name} not found", reason="CERTIFICATE_NOT_FOUND", metadata={"name": name})
        return found

    @keyed(certificate_pb2.Certificate)
    async def IssueCertificate(
        self, request: certificate_service_pb2.IssueCertificateRequest, context: Any
    ) -> certificate_pb2.Certificate:
        principal = require_principal()
        if request.WhichOneof("subject") == "periodic":
            periodic = request.periodic
            broker = acting_for(principal, periodic.broker, "certifies")
            certificate, _ = await self._issuer.issue_periodic(
                periodic.buyer_id, periodic.year, periodic.month, broker,
                reissue=request.reissue, trace_id=trace_context(),
            )  # fmt: skip
            return certificate
        invoice = await self._issuer.invoice(request.invoice)
        own = tenant_scope(principal)
        if own and invoice.broker != own:
            raise NotFound(f"invoice {request.invoice!r} not found", reason="INVOICE_NOT_FOUND")
        commission = await self._issuer.commission_total(invoice.name)
        certificate, _ = await self._issuer.issue_for_invoice(
            invoice, commission, reissue=request.reissue, trace_id=trace_context()
        )
        return certificate

    async def GetCertificate(
        self, request: certificate_service_pb2.GetCertificateRequest, context: Any
    ) -> certificate_pb2.Certificate:
        return await self._visible(request.name)

    async def DownloadCertificate(
        self, request: certificate_service_pb2.DownloadCertificateRequest, context: Any
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        certificate = await self._visible(request.name)
        try:
            content = await asyncio.to_thread(self._issuer.objects.get, certificate.sha256)
        except (FileNotFoundError, CorruptObject) as exc:
            # The registry never hands out a file that is not the one it signed.
            raise DataLoss(
                f"the stored file of {certificate.name} is missing or altered", reason="CERTIFICATE_FILE_CORRUPT"
            ) from exc
        for start in range(0, len(content), CHUNK):
            yield httpbody_pb2.HttpBody(
                content_type="application/pdf" if start == 0 else "", data=content[start : start + CHUNK]
            )

    async def ListCertificates(
        self, request: certificate_service_pb2.ListCertificatesRequest, context: Any
    ) -> certificate_service_pb2.ListCertificatesResponse:
        broker = acting_for(require_principal(), request.broker, "lists certificates")
        state = certificate_pb2.CertificateState.Name(request.state).removeprefix("CERTIFICATE_STATE_")
        since = request.issue_time_from.ToDatetime(dt.UTC) if request.HasField("issue_time_from") else None
        state = "" if state == "UNSPECIFIED" else state
        certificates, token = await list_page(
            request, (INSTANT, TEXT), 50, self._store.page, broker, request.invoice, state, since
        )
        return certificate_service_pb2.ListCertificatesResponse(certificates=certificates, next_page_token=token)

    async def RevokeCertificate(
        self, request: certificate_service_pb2.RevokeCertificateRequest, context: Any
    ) -> certificate_pb2.Certificate:
        revoked = await self._store.revoke(_id(request.name), request.reason, trace_context())
        if revoked is None:
            raise NotFound(f"{request.name} not found", reason="CERTIFICATE_NOT_FOUND")
        return revoked

    async def ListCertificateEvents(
        self, request: certificate_service_pb2.ListCertificateEventsRequest, context: Any
    ) -> certificate_service_pb2.ListCertificateEventsResponse:
        response: certificate_service_pb2.ListCertificateEventsResponse = await outbox_page(
            self._store.pool, OUTBOX_RELAY_QUERY, request, certificate_service_pb2.ListCertificateEventsResponse
        )
        return response

    async def VerifyCertificate(
        self, request: certificate_service_pb2.VerifyCertificateRequest, context: Any
    ) -> certificate_service_pb2.VerifyCertificateResponse:
        """Public: what a code or a file hash certifies and whether it still
        stands; nothing else (no broker, no other certificates)."""
        found = await self._store.find(code=normalise_code(request.code) if request.code else "", sha256=request.sha256)
        if found is None:
            return certificate_service_pb2.VerifyCertificateResponse(unknown=True)
        certificate, facts, changed, successor = found
        response = certificate_service_pb2.VerifyCertificateResponse(
            state=certificate.state,
            facts=facts,
            revoke_reason=certificate.revoke_reason,
            superseded_by_number=successor,
        )
        if changed is not None:
            response.change_time.FromDatetime(changed)
        return response
