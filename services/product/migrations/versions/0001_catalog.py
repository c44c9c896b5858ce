"""The catalog: products, their history, and long-running imports.

Revision ID: product_0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "product_0001"
down_revision = None
branch_labels = None
depends_on = None

_CONTENT = """
    display_name text NOT NULL,
    description text NOT NULL DEFAULT '',
    category smallint NOT NULL,
    subcategory text NOT NULL DEFAULT '',
    processing_level smallint NOT NULL,
    unit_code text NOT NULL DEFAULT '',
    vat_treatment smallint NOT NULL DEFAULT 0,
    withholding_class smallint NOT NULL DEFAULT 0,
    eligible boolean NOT NULL,
    active boolean NOT NULL DEFAULT true,
    revision bigint NOT NULL DEFAULT 1,
    change text NOT NULL,
    actor text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # Collation "C" makes the primary key serve code-prefix range scans.
    op.execute(f'CREATE TABLE products (code text COLLATE "C" PRIMARY KEY, {_CONTENT})')
    op.execute("CREATE INDEX products_name_trgm ON products USING gin (display_name gin_trgm_ops)")
    op.execute("CREATE INDEX products_category ON products (category, code)")
    # Earlier versions of changed products; the current one is in products.
    op.execute(
        f'CREATE TABLE product_history (code text COLLATE "C" NOT NULL, {_CONTENT}, PRIMARY KEY (code, revision))'
    )
    op.execute(
        """
        CREATE TABLE import_chunks (
            operation text NOT NULL,
            file_index integer NOT NULL,
            chunk_index integer NOT NULL,
            rows_read bigint NOT NULL,
            inserted bigint NOT NULL,
            updated bigint NOT NULL,
            unchanged bigint NOT NULL,
            rejected bigint NOT NULL,
            bytes_read bigint NOT NULL,
            commit_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (operation, file_index, chunk_index)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE import_rejects (
            operation text NOT NULL,
            file_index integer NOT NULL,
            line bigint NOT NULL,
            field text NOT NULL,
            reason text NOT NULL,
            message text NOT NULL,
            raw text NOT NULL,
            PRIMARY KEY (operation, file_index, line)
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
    for table in ("operations", "import_rejects", "import_chunks", "product_history", "products"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
