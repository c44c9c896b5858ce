"""What a consumer needs to recover events: its mark in each producer's
log (every position up to it applied), the events it set aside as dead
letters, and an index to forget ids of events applied long ago. Frozen
text, as every migration (the other consumers' migrations say the same).

Revision ID: certificate_0005
Revises: certificate_0004
"""

from __future__ import annotations

from alembic import op

revision = "certificate_0005"
down_revision = "certificate_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE consumer_marks (consumer text NOT NULL, source text NOT NULL, position bigint NOT NULL, "
        "update_time timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, source))"
    )
    op.execute(
        """
        CREATE TABLE dead_letters (
            id bigserial PRIMARY KEY,
            consumer text NOT NULL,
            source text NOT NULL,
            event_id text,
            position bigint,
            raw text NOT NULL,
            attempts integer NOT NULL,
            error text NOT NULL,
            state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'redriven')),
            create_time timestamptz NOT NULL DEFAULT now(),
            redrive_time timestamptz
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX dead_letters_event ON dead_letters (consumer, event_id) WHERE event_id IS NOT NULL")
    op.execute("CREATE INDEX processed_events_age ON processed_events (processed_at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS processed_events_age")
    op.execute("DROP TABLE IF EXISTS dead_letters")
    op.execute("DROP TABLE IF EXISTS consumer_marks")
