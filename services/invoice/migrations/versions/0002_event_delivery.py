"""Relay checkpoints and the ids of events already applied (idempotent consumers).

Revision ID: invoice_0002
Revises: invoice_0001
"""

from __future__ import annotations

from alembic import op

from services.kit.events import PROCESSED_DDL, RELAY_DDL

revision = "invoice_0002"
down_revision = "invoice_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(RELAY_DDL)
    op.execute(PROCESSED_DDL)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS processed_events")
    op.execute("DROP TABLE IF EXISTS relay_checkpoints")
