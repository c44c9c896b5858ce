"""Certificate metadata and the outbox (the signed files live in the object
store, named by their SHA-256)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from bmc.certificate.v1 import certificate_pb2
from services.kit.database import PooledStore
from services.kit.events import OUTBOX_COLUMNS, first_time
from services.kit.sql import Where

CONSUMER = "certificate"

# Whatever its state (index certificates_subject, migration certificate_0003).
LATEST_OF_SUBJECT = "SELECT * FROM certificates WHERE subject = $1 ORDER BY issue_time DESC LIMIT 1"


@dataclass(frozen=True)
class NewCertificate:
    certificate: (
        certificate_pb2.Certificate
    )  # name, number, kind, invoice, buyer, broker, code, sha256, size, issue_time
    facts: certificate_pb2.CertifiedFacts
    subject: str
    buyer_id: str


def _state(message: certificate_pb2.Certificate) -> str:
    return certificate_pb2.CertificateState.Name(message.state).removeprefix("CERTIFICATE_STATE_")


class CertificateStore(PooledStore):
    @staticmethod
    def _certificate(row: asyncpg.Record) -> certificate_pb2.Certificate:
        message = certificate_pb2.Certificate.FromString(row["certificate"])
        message.state = certificate_pb2.CertificateState.Value(f"CERTIFICATE_STATE_{row['state']}")
        if row["revoke_time"] is not None:
            message.revoke_time.FromDatetime(row["revoke_time"])
        message.revoke_reason = row["revoke_reason"]
        message.superseded_by = row["superseded_by"]
        return message

    async def next_number(self, year: int) -> int:
        async with self.pool.acquire() as conn:
            value: int = await conn.fetchval(
                "INSERT INTO certificate_counters VALUES ($1, 1) "
                "ON CONFLICT (year) DO UPDATE SET last = certificate_counters.last + 1 RETURNING last",
                year,
            )
        return value

    async def referenced(self, digests: list[str]) -> set[str]:
        """Those of `digests` (SHA-256 of stored files) some certificate refers to."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT DISTINCT sha256 FROM certificates WHERE sha256 = ANY($1::text[])", digests)
        return {r["sha256"] for r in rows}

    async def valid_for(self, subject: str) -> certificate_pb2.Certificate | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM certificates WHERE subject = $1 AND state = 'VALID'", subject)
        return self._certificate(row) if row else None

    async def insert(
        self, new: NewCertificate, supersedes: str = "", applying: str = "", trace_id: str = ""
    ) -> tuple[certificate_pb2.Certificate, bool]:
        """Records a certificate and its `CertificateIssued` event, superseding
        `supersedes`; (the certificate, True). If the subject already has a
        valid certificate (a concurrent issue), or `applying` names an event
        applied before: (that certificate, False)."""
        c = new.certificate
        async with self.pool.acquire() as conn, conn.transaction():
            if applying and not await first_time(conn, CONSUMER, applying):
                existing = await conn.fetchrow(LATEST_OF_SUBJECT, new.subject)
                if existing is not None:
                    return self._certificate(existing), False
            if supersedes:
                await conn.execute(
                    "UPDATE certificates SET state = 'SUPERSEDED', superseded_by = $2, change_time = now() "
                    "WHERE id = $1 AND state = 'VALID'",
                    supersedes.removeprefix("certificates/"), c.name,
                )  # fmt: skip
            inserted = await conn.fetchval(
                "INSERT INTO certificates (id, number, kind, state, subject, invoice, broker, buyer_id, "
                "verification_code, sha256, size_bytes, certificate, facts, issue_time) "
                "VALUES ($1, $2, $3, 'VALID', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                "ON CONFLICT (subject) WHERE state = 'VALID' DO NOTHING RETURNING 1",
                c.name.removeprefix("certificates/"), c.number,
                certificate_pb2.CertificateKind.Name(c.kind).removeprefix("CERTIFICATE_KIND_"), new.subject,
                c.invoice, c.broker, new.buyer_id, c.verification_code, c.sha256, c.size_bytes,
                c.SerializeToString(), new.facts.SerializeToString(), c.issue_time.ToDatetime(dt.UTC),
            )  # fmt: skip
            if inserted is None:
                row = await conn.fetchrow(
                    "SELECT * FROM certificates WHERE subject = $1 AND state = 'VALID'", new.subject
                )
                assert row is not None
                return self._certificate(row), False
            await self._publish(
                conn, c.name, "CertificateIssued", c.broker, trace_id,
                {"certificate": c.name, "number": c.number, "invoice": c.invoice, "sha256": c.sha256,
                 "supersedes": supersedes},
            )  # fmt: skip
            row = await conn.fetchrow("SELECT * FROM certificates WHERE id = $1", c.name.removeprefix("certificates/"))
        assert row is not None
        return self._certificate(row), True

    async def _publish(
        self, conn: asyncpg.Connection, stream_id: str, type_: str, tenant: str, trace_id: str, data: Mapping[str, Any]
    ) -> None:
        position = await conn.fetchval("UPDATE outbox_head SET position = position + 1 WHERE id = 1 RETURNING position")
        await conn.copy_records_to_table(
            "outbox",
            records=[
                (
                    position,
                    uuid.uuid4(),
                    stream_id,
                    1,
                    type_,
                    tenant,
                    trace_id,
                    orjson.dumps(data).decode(),
                    dt.datetime.now(dt.UTC),
                )
            ],
            columns=OUTBOX_COLUMNS,
        )

    async def revoke(self, certificate_id: str, reason: str, trace_id: str) -> certificate_pb2.Certificate | None:
        """Revokes a valid certificate (None if there is no such certificate);
        revoking a revoked one changes nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE certificates SET state = 'REVOKED', revoke_time = now(), change_time = now(), "
                "revoke_reason = $2 WHERE id = $1 AND state <> 'REVOKED' RETURNING *",
                certificate_id, reason,
            )  # fmt: skip
            if row is None:
                row = await conn.fetchrow("SELECT * FROM certificates WHERE id = $1", certificate_id)
                return self._certificate(row) if row else None
            await self._publish(
                conn, f"certificates/{certificate_id}", "CertificateRevoked", row["broker"], trace_id,
                {"certificate": f"certificates/{certificate_id}", "invoice": row["invoice"], "reason": reason},
            )  # fmt: skip
        return self._certificate(row)

    async def get(self, certificate_id: str, broker: str = "") -> certificate_pb2.Certificate | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM certificates WHERE id = $1 AND ($2 = '' OR broker = $2)", certificate_id, broker
            )
        return self._certificate(row) if row else None

    async def find(
        self, *, code: str = "", sha256: str = ""
    ) -> tuple[certificate_pb2.Certificate, certificate_pb2.CertifiedFacts, dt.datetime | None, str] | None:
        """By verification code or file hash: the certificate, its facts, when
        its state last changed and the number of its successor."""
        column, value = ("verification_code", code) if code else ("sha256", sha256.lower())
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT c.*, s.number AS successor FROM certificates c "  # noqa: S608 - a fixed column name
                f"LEFT JOIN certificates s ON s.id = substr(c.superseded_by, 14) WHERE c.{column} = $1",
                value,
            )
        if row is None:
            return None
        facts = certificate_pb2.CertifiedFacts.FromString(row["facts"])
        return self._certificate(row), facts, row["change_time"], row["successor"] or ""

    async def page(
        self, size: int, after: Sequence[Any] | None, broker: str, invoice: str, state: str, since: Any
    ) -> list[tuple[certificate_pb2.Certificate, tuple[dt.datetime, str]]]:
        sql = Where()
        if broker:
            sql.add("broker = ?", broker)
        if invoice:
            sql.add("invoice = ?", invoice)
        if state:
            sql.add("state = ?", state)
        if since is not None:
            sql.add("issue_time >= ?", since)
        if after is not None:
            sql.add("(issue_time, id) < (?, ?)", *after)
        rows = await self.select(
            sql, "SELECT * FROM certificates", f"ORDER BY issue_time DESC, id DESC LIMIT {sql.bind(size)}"
        )
        return [(self._certificate(r), (r["issue_time"], r["id"])) for r in rows]
