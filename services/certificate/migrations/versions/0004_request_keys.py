"""Answers of keyed requests (`IssueCertificate` with a `request_id`),
scoped to (method, tenant, caller), with the request's fingerprint.

Revision ID: certificate_0004
Revises: certificate_0003
"""

from __future__ import annotations

from alembic import op

revision = "certificate_0004"
down_revision = "certificate_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
