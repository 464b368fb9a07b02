"""Patient links appended in commit order first, moved into audit_patients in batches.

A search's AuditEvent links to every patient on its page. Inserted straight
into audit_patients (keyed by patient, then time), each link lands on its
patient's own page: a page of 50 patients dirtied ~50 pages of 4 KiB per
commit, each written to the WAL. The SQLite audit appender now appends the
links to this table (rows in commit order: a few pages per commit) and moves
them into audit_patients in batches, sorted, each page written once per
batch. A patient's trail reads both. The downgrade moves what is pending.

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

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_patients_pending",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("patient", sa.String(128), nullable=False),
        sa.Column("recorded", sa.Float, nullable=False),
        sa.Column("event_seq", _Id, nullable=False),
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO audit_patients (patient, recorded, event_seq) "
        "SELECT DISTINCT patient, recorded, event_seq FROM audit_patients_pending"
    )
    op.drop_table("audit_patients_pending")
