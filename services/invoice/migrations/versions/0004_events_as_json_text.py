"""Events keep their payload as `json` (the text as written) rather than `jsonb`.

The event store is append-only and read back whole: `jsonb`'s parse into a
binary form and rendering back to text cost CPU on every write and relay
without serving any query; `json` stores the text exactly as it was hashed.

Revision ID: invoice_0004
Revises: invoice_0003
"""

from __future__ import annotations

from alembic import op

revision = "invoice_0004"
down_revision = "invoice_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE events ALTER COLUMN data TYPE json USING data::json")
    op.execute("ALTER TABLE events ALTER COLUMN metadata TYPE json USING metadata::json")


def downgrade() -> None:
    op.execute("ALTER TABLE events ALTER COLUMN data TYPE jsonb USING data::jsonb")
    op.execute("ALTER TABLE events ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb")
