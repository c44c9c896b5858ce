"""Baseline: the ocr database exists and is under migration control.

Revision ID: ocr_0001
Revises:
"""

from __future__ import annotations

revision = "ocr_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the service's tables arrive with issue #7."""


def downgrade() -> None:
    """Nothing to undo."""
