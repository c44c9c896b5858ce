"""Idempotency keys scoped to (method, tenant, caller), with the request's
fingerprint so that a key reused for another request is refused.

Registrations' keys gain the caller (filled from the registering event's
actor) and a fingerprint (empty for keys recorded before: they match any
repeat, as they did). Operations' keys were unique across the service; now
per kind, tenant and caller. `request_keys` holds the answers of other keyed
RPCs (AnnulInvoice).

Revision ID: invoice_0005
Revises: invoice_0004
"""

from __future__ import annotations

from alembic import op

revision = "invoice_0005"
down_revision = "invoice_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN subject text NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN fingerprint text NOT NULL DEFAULT ''")
    op.execute(
        "UPDATE idempotency_keys k SET subject = coalesce(e.metadata->>'actor', '') "
        "FROM events e WHERE e.stream_id = k.invoice_id AND e.version = 1"
    )
    op.execute("ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey")
    op.execute("ALTER TABLE idempotency_keys ADD PRIMARY KEY (tenant, subject, request_id)")
    op.execute("ALTER TABLE operations DROP CONSTRAINT operations_request_id_key")
    op.execute("ALTER TABLE operations ADD COLUMN fingerprint text NOT NULL DEFAULT ''")
    op.execute(
        "CREATE UNIQUE INDEX operations_request_key ON operations (kind, tenant, subject, request_id) "
        "WHERE request_id IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE request_keys (
            method text NOT NULL,
            tenant text NOT NULL,
            subject text NOT NULL,
            request_id text NOT NULL,
            fingerprint text NOT NULL,
            response bytea,
            create_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (method, tenant, subject, request_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE request_keys")
    op.execute("DROP INDEX operations_request_key")
    op.execute("ALTER TABLE operations DROP COLUMN fingerprint")
    op.execute("ALTER TABLE operations ADD UNIQUE (request_id)")
    op.execute("ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey")
    op.execute("ALTER TABLE idempotency_keys ADD PRIMARY KEY (tenant, request_id)")
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN fingerprint")
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN subject")
