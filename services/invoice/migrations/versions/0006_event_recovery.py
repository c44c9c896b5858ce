"""Event recovery: consumer marks, dead letters (`EVENT_RECOVERY_V1`).

Revision ID: invoice_0006
Revises: invoice_0005
"""

from __future__ import annotations

from alembic import op

from services.kit.frozen_ddl import EVENT_RECOVERY_V1, EVENT_RECOVERY_V1_DOWN

revision = "invoice_0006"
down_revision = "invoice_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in EVENT_RECOVERY_V1:
        op.execute(statement)


def downgrade() -> None:
    for statement in EVENT_RECOVERY_V1_DOWN:
        op.execute(statement)
