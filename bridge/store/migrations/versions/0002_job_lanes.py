"""Lanes of queued writes: every lane (patient) a job must wait its turn in.

A job holds one row per lane while it is unfinished; delivering it waits until
no earlier job holds a row in any of its lanes. The rows go when the job
finishes, so the table stays as small as the queue.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_lanes",
        sa.Column("lane", sa.String(256), primary_key=True),
        sa.Column("seq", _Id, primary_key=True),
    )
    op.create_index("job_lanes_seq", "job_lanes", ["seq"])


def downgrade() -> None:
    op.drop_table("job_lanes")
