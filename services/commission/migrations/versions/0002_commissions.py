"""Tariff versions, UVT values, commissions, the settlement ledger, closed
periods, settlements, the outbox and operations.

Revision ID: commission_0002
Revises: commission_0001
"""

from __future__ import annotations

from alembic import op

revision = "commission_0002"
down_revision = "commission_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions are never edited: rows are only inserted.
    op.execute(
        """
        CREATE TABLE tariff_schedules (
            id text PRIMARY KEY,
            effective_date date NOT NULL UNIQUE,
            schedule bytea NOT NULL,
            create_time timestamptz NOT NULL DEFAULT now(),
            creator text NOT NULL
        )
        """
    )
    op.execute(
        "CREATE TABLE uvt_values (year integer PRIMARY KEY, value numeric(14, 2) NOT NULL, source text NOT NULL)"
    )
    op.execute(
        """
        CREATE TABLE commissions (
            invoice_id text PRIMARY KEY,
            broker text NOT NULL,
            buyer_id text NOT NULL,
            registration_date date NOT NULL,
            category text NOT NULL,
            state text NOT NULL,
            commission bytea NOT NULL,
            create_time timestamptz NOT NULL,
            reverse_time timestamptz
        )
        """
    )
    op.execute("CREATE INDEX commissions_broker_time ON commissions (broker, create_time DESC, invoice_id DESC)")
    op.execute("CREATE INDEX commissions_time ON commissions (create_time DESC, invoice_id DESC)")
    op.execute("CREATE INDEX commissions_registration_date ON commissions (registration_date)")
    # The ledger settlements add up: one CHARGE per commission, one REVERSAL
    # per annulment. Entry numbers and outbox positions are handed out under
    # the `heads` row lock, so both are gapless and commit in order.
    op.execute(
        """
        CREATE TABLE ledger (
            entry bigint PRIMARY KEY,
            invoice_id text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('CHARGE', 'REVERSAL')),
            natural_period text NOT NULL,
            period text NOT NULL,
            broker text NOT NULL,
            buyer_id text NOT NULL,
            category text NOT NULL,
            sign smallint NOT NULL CHECK (sign IN (1, -1)),
            base numeric(20, 2) NOT NULL,
            commission numeric(20, 2) NOT NULL,
            vat numeric(20, 2) NOT NULL,
            total numeric(20, 2) NOT NULL,
            schedule_id text NOT NULL,
            event_id text NOT NULL,
            UNIQUE (invoice_id, kind)
        )
        """
    )
    op.execute("CREATE INDEX ledger_period ON ledger (period, broker)")
    op.execute(
        "CREATE TABLE heads (id integer PRIMARY KEY CHECK (id = 1), ledger bigint NOT NULL, outbox bigint NOT NULL)"
    )
    op.execute("INSERT INTO heads VALUES (1, 0, 0)")
    op.execute(
        "CREATE TABLE closed_periods "
        "(period text PRIMARY KEY, close_time timestamptz NOT NULL, closed_by text NOT NULL)"
    )
    op.execute(
        """
        CREATE TABLE settlements (
            id text PRIMARY KEY,
            period text NOT NULL,
            broker text NOT NULL,
            state text NOT NULL,
            settlement bytea NOT NULL,
            last_entry bigint NOT NULL,
            create_time timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX settlements_period ON settlements (period DESC, id DESC)")
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
    op.execute("CREATE TABLE IF NOT EXISTS relay_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)")
    op.execute(
        "CREATE TABLE IF NOT EXISTS processed_events (consumer text NOT NULL, event_id text NOT NULL, "
        "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id))"
    )
    # Operations (AIP-151), as services.kit.operations kept them at this revision.
    op.execute(
        """
        CREATE TABLE operations (
            name text PRIMARY KEY,
            kind text NOT NULL,
            request_id text UNIQUE,
            subject text NOT NULL DEFAULT '',
            tenant text NOT NULL DEFAULT '',
            request bytea,
            metadata bytea,
            response bytea,
            error bytea,
            done boolean NOT NULL DEFAULT false,
            cancel_requested boolean NOT NULL DEFAULT false,
            create_time timestamptz NOT NULL DEFAULT now(),
            update_time timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX operations_unfinished ON operations (create_time) WHERE NOT done")


def downgrade() -> None:
    for table in (
        "operations", "processed_events", "relay_checkpoints", "outbox", "settlements", "closed_periods",
        "heads", "ledger", "commissions", "uvt_values", "tariff_schedules",
    ):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS {table}")
