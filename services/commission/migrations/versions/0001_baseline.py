"""Baseline: the commission database exists and is under migration control.

Revision ID: commission_0001
Revises:
"""

from __future__ import annotations

revision = "commission_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the service's tables arrive with issue #5."""


def downgrade() -> None:
    """Nothing to undo."""
