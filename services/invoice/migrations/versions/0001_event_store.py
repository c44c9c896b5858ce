"""The event store, its hash chain, and the registration read model.

Revision ID: invoice_0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "invoice_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Append-only: positions are assigned under the chain head's row lock, so
    # they are gapless and commit in order (the relay relies on it).
    op.execute(
        """
        CREATE TABLE events (
            position bigint PRIMARY KEY,
            event_id uuid NOT NULL UNIQUE,
            stream_id text NOT NULL,
            version integer NOT NULL,
            type text NOT NULL,
            data jsonb NOT NULL,
            metadata jsonb NOT NULL,
            record_time timestamptz NOT NULL,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            UNIQUE (stream_id, version)
        )
        """
    )
    op.execute(
        "CREATE TABLE chain_head (id integer PRIMARY KEY CHECK (id = 1), position bigint NOT NULL, hash text NOT NULL)"
    )
    op.execute("INSERT INTO chain_head VALUES (1, 0, repeat('0', 64))")
    op.execute(
        """
        CREATE TABLE invoices (
            id text PRIMARY KEY,
            broker text NOT NULL,
            state text NOT NULL,
            number text NOT NULL,
            cufe text NOT NULL UNIQUE,
            seller_nit text NOT NULL,
            buyer_id text NOT NULL,
            issue_date date NOT NULL,
            register_time timestamptz NOT NULL,
            update_time timestamptz NOT NULL,
            registration_number text NOT NULL UNIQUE,
            version integer NOT NULL,
            document jsonb NOT NULL,
            annulment_reason text NOT NULL DEFAULT '',
            certificate text NOT NULL DEFAULT '',
            UNIQUE (seller_nit, number)
        )
        """
    )
    op.execute("CREATE INDEX invoices_broker_time ON invoices (broker, register_time DESC, id DESC)")
    op.execute("CREATE INDEX invoices_time ON invoices (register_time DESC, id DESC)")
    op.execute("CREATE INDEX invoices_buyer ON invoices (buyer_id)")
    op.execute("CREATE INDEX invoices_issue_date ON invoices (issue_date)")
    op.execute("CREATE TABLE registration_counters (year integer PRIMARY KEY, last bigint NOT NULL)")
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            tenant text NOT NULL,
            request_id text NOT NULL,
            invoice_id text NOT NULL,
            PRIMARY KEY (tenant, request_id)
        )
        """
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
    for table in ("operations", "idempotency_keys", "registration_counters", "invoices", "chain_head", "events"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
