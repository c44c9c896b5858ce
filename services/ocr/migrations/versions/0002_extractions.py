"""Extractions: what was read from each upload, for the broker to review.

Revision ID: ocr_0002
Revises: ocr_0001
"""

from __future__ import annotations

from alembic import op

revision = "ocr_0002"
down_revision = "ocr_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE extractions (
            id text PRIMARY KEY,
            broker text NOT NULL,
            sha256 text NOT NULL,
            extraction bytea NOT NULL,
            create_time timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX extractions_broker_time ON extractions (broker, create_time DESC, id DESC)")
    op.execute("CREATE INDEX extractions_time ON extractions (create_time DESC, id DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS extractions")
