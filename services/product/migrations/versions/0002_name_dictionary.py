"""Name search over the distinct product names instead of every product.

A trigram index over 60M product names costs more to build and maintain than
the rest of the catalog together, while exports repeat names heavily (one
commodity, many lots). So the trigram index covers `product_names`, one row per
distinct name, and a B-tree over a 64-bit hash of the name (a third of the
cost of one over the text) joins a matched name back to its products.

Revision ID: product_0002
Revises: product_0001
"""

from __future__ import annotations

from alembic import op

revision = "product_0002"
down_revision = "product_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE product_names (display_name text PRIMARY KEY)")
    op.execute("INSERT INTO product_names SELECT DISTINCT display_name FROM products")
    op.execute("CREATE INDEX product_names_trgm ON product_names USING gin (display_name gin_trgm_ops)")
    op.execute("DROP INDEX IF EXISTS products_name_trgm")
    op.execute("CREATE INDEX IF NOT EXISTS products_name ON products (hashtextextended(display_name, 0))")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS products_name")
    op.execute("CREATE INDEX IF NOT EXISTS products_name_trgm ON products USING gin (display_name gin_trgm_ops)")
    op.execute("DROP TABLE IF EXISTS product_names")
