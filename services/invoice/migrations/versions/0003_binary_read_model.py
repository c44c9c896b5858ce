"""The read model keeps the submitted invoice as protobuf bytes.

Reads (GetInvoice, ListInvoices) then parse it natively instead of through
the JSON mapping; the audit trail keeps it as JSON in the events.

Revision ID: invoice_0003
Revises: invoice_0002
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from google.protobuf import json_format

from bmc.invoice.v1 import invoice_pb2

revision = "invoice_0003"
down_revision = "invoice_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE invoices ADD COLUMN document_pb bytea")
    bind = op.get_bind()
    for invoice_id, document in bind.execute(sa.text("SELECT id, document::text FROM invoices")):
        message = json_format.ParseDict(json.loads(document), invoice_pb2.Invoice(), ignore_unknown_fields=True)
        bind.execute(
            sa.text("UPDATE invoices SET document_pb = :pb WHERE id = :id"),
            {"pb": message.SerializeToString(), "id": invoice_id},
        )
    op.execute("ALTER TABLE invoices ALTER COLUMN document_pb SET NOT NULL")
    op.execute("ALTER TABLE invoices DROP COLUMN document")


def downgrade() -> None:
    raise NotImplementedError("the JSON read model is rebuilt from the events, not downgraded")
