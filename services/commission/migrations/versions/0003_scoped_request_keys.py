"""Operations' idempotency keys scoped to (kind, tenant, caller), with the
request's fingerprint so that a key reused for another request (another
period, another broker) is refused. Keys recorded before have an empty
fingerprint and match any repeat, as they did.

Revision ID: commission_0003
Revises: commission_0002
"""

from __future__ import annotations

from alembic import op

revision = "commission_0003"
down_revision = "commission_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE operations DROP CONSTRAINT operations_request_id_key")
    op.execute("ALTER TABLE operations ADD COLUMN fingerprint text NOT NULL DEFAULT ''")
    op.execute(
        "CREATE UNIQUE INDEX operations_request_key ON operations (kind, tenant, subject, request_id) "
        "WHERE request_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX operations_request_key")
    op.execute("ALTER TABLE operations DROP COLUMN fingerprint")
    op.execute("ALTER TABLE operations ADD UNIQUE (request_id)")
