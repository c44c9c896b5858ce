"""Relay checkpoints and the ids of events already applied (idempotent consumers).

Revision ID: invoice_0002
Revises: invoice_0001
"""

from __future__ import annotations

from alembic import op

revision = "invoice_0002"
down_revision = "invoice_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE IF NOT EXISTS relay_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)")
    op.execute(
        "CREATE TABLE IF NOT EXISTS processed_events (consumer text NOT NULL, event_id text NOT NULL, "
        "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id))"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS processed_events")
    op.execute("DROP TABLE IF EXISTS relay_checkpoints")
