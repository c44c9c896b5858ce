"""Certificates (metadata; the signed files live in the object store by
SHA-256), their numbering, the outbox and operations.

Revision ID: certificate_0002
Revises: certificate_0001
"""

from __future__ import annotations

from alembic import op

revision = "certificate_0002"
down_revision = "certificate_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE certificates (
            id text PRIMARY KEY,
            number text NOT NULL UNIQUE,
            kind text NOT NULL,
            state text NOT NULL,
            subject text NOT NULL,
            invoice text NOT NULL,
            broker text NOT NULL,
            buyer_id text NOT NULL,
            verification_code text NOT NULL UNIQUE,
            sha256 text NOT NULL UNIQUE,
            size_bytes bigint NOT NULL,
            certificate bytea NOT NULL,
            facts bytea NOT NULL,
            issue_time timestamptz NOT NULL,
            revoke_time timestamptz,
            revoke_reason text NOT NULL DEFAULT '',
            superseded_by text NOT NULL DEFAULT '',
            change_time timestamptz
        )
        """
    )
    # One valid certificate per subject (an invoice, or a buyer's period).
    op.execute("CREATE UNIQUE INDEX certificates_valid_subject ON certificates (subject) WHERE state = 'VALID'")
    op.execute("CREATE INDEX certificates_broker_time ON certificates (broker, issue_time DESC, id DESC)")
    op.execute("CREATE INDEX certificates_time ON certificates (issue_time DESC, id DESC)")
    op.execute("CREATE INDEX certificates_invoice ON certificates (invoice)")
    op.execute("CREATE TABLE certificate_counters (year integer PRIMARY KEY, last bigint NOT NULL)")
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS outbox (
            position bigint PRIMARY KEY,
            event_id uuid NOT NULL UNIQUE,
            stream_id text NOT NULL,
            version integer NOT NULL,
            type text NOT NULL,
            tenant text NOT NULL,
            trace_id text NOT NULL,
            data jsonb NOT NULL,
            record_time timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE TABLE outbox_head (id integer PRIMARY KEY CHECK (id = 1), position bigint NOT NULL)")
    op.execute("INSERT INTO outbox_head VALUES (1, 0)")
    op.execute("CREATE TABLE IF NOT EXISTS relay_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)")
    op.execute(
        "CREATE TABLE IF NOT EXISTS processed_events (consumer text NOT NULL, event_id text NOT NULL, "
        "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id))"
    )


def downgrade() -> None:
    for table in (
        "processed_events", "relay_checkpoints", "outbox_head", "outbox", "certificate_counters", "certificates",
    ):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS {table}")
