"""Schema pieces several services' migrations create alike. Each constant
is frozen once a migration uses it (a migration must create the same schema
whenever it runs): a later change is a new constant and a new migration."""

from __future__ import annotations

# What a consumer needs to recover events: its mark in each producer's log
# (every position up to it applied), the events it set aside as dead
# letters, and an index to forget ids of events applied long ago.
EVENT_RECOVERY_V1 = (
    "CREATE TABLE consumer_marks (consumer text NOT NULL, source text NOT NULL, position bigint NOT NULL, "
    "update_time timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, source))",
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
    """,
    "CREATE UNIQUE INDEX dead_letters_event ON dead_letters (consumer, event_id) WHERE event_id IS NOT NULL",
    "CREATE INDEX processed_events_age ON processed_events (processed_at)",
)
EVENT_RECOVERY_V1_DOWN = (
    "DROP INDEX IF EXISTS processed_events_age",
    "DROP TABLE IF EXISTS dead_letters",
    "DROP TABLE IF EXISTS consumer_marks",
)
