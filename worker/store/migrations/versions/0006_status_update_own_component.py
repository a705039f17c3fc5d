"""status_updates: the incident's own component status, which a cadence update repeats

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("status_updates", sa.Column("own_component", sa.String(32), nullable=True))


def downgrade() -> None:
    # In place, as 0005's: SQLite has ALTER TABLE … DROP COLUMN since 3.35 (2021).
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"downgrading below 0006 needs SQLite 3.35 or later, not {sqlite3.sqlite_version}")
    op.drop_column("status_updates", "own_component")
