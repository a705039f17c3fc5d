"""runs: the playbook's approval_timeout, kept with the run (its links expire after it, not the worker's default)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("approval_timeout_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN in place: a batch rebuild would drop `runs`, which run_steps references,
    # and fail with foreign keys on. SQLite has it since 3.35 (2021).
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"downgrading below 0005 needs SQLite 3.35 or later, not {sqlite3.sqlite_version}")
    op.drop_column("runs", "approval_timeout_seconds")
