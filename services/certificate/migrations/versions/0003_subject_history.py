"""Every certificate of a subject, newest first, by index.

A redelivered issuing event answers with the subject's latest certificate,
whatever its state; the unique index covers only the valid ones, so that
lookup walked every certificate ever issued.

Revision ID: certificate_0003
Revises: certificate_0002
"""

from __future__ import annotations

from alembic import op

revision = "certificate_0003"
down_revision = "certificate_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX certificates_subject ON certificates (subject, issue_time DESC)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS certificates_subject")
