"""Baseline: the product database exists and is under migration control.

Revision ID: product_0001
Revises:
"""

from __future__ import annotations

revision = "product_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the service's tables arrive with issue #3."""


def downgrade() -> None:
    """Nothing to undo."""
