"""Idempotency keys scoped to (method, tenant, caller), with the request's
fingerprint so that a key reused for another request is refused.

Operations' keys were unique across the service; now per kind, tenant and
caller (keys recorded before have an empty fingerprint and match any
repeat, as they did). `request_keys` holds the answers of other keyed RPCs
(CreateProduct).

Revision ID: product_0003
Revises: product_0002
"""

from __future__ import annotations

from alembic import op

revision = "product_0003"
down_revision = "product_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
