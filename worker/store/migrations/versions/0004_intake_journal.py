"""intake journal: read offsets per journal file, and reserved delivery ids

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_offsets",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "id_reservations",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("id_reservations")
    op.drop_table("journal_offsets")
