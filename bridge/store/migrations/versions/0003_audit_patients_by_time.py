"""The audit trail's patient links keyed by (patient, recorded, event): one B-tree.

A search that returns 50 patients writes 50 links with its AuditEvent. Keyed
by (patient, event) with a separate (patient, recorded) index, SQLite kept
three B-trees per link (the rowid table, the key's index and the time index);
now one (SQLite: WITHOUT ROWID), which also serves "this patient's events in
this period" directly. About half the CPU of writing a search's links. The
upgrade copies the table once (a large trail: a longer first start, and on
SQLite twice the table's space until it is done).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _links(name: str, key: list[str]) -> None:
    op.create_table(
        name,
        sa.Column("patient", sa.String(128), nullable=False),
        sa.Column("event_seq", _Id, nullable=False),
        sa.Column("recorded", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*key, name=f"{name}_pkey"),
        sqlite_with_rowid=len(key) == 2,
    )


def upgrade() -> None:
    _links("audit_patients_new", ["patient", "recorded", "event_seq"])
    op.execute(
        "INSERT INTO audit_patients_new (patient, event_seq, recorded) "
        "SELECT patient, event_seq, recorded FROM audit_patients"
    )
    op.drop_table("audit_patients")
    op.rename_table("audit_patients_new", "audit_patients")
    _name_key()


def _name_key() -> None:
    """PostgreSQL keeps a constraint's name through a table's rename: give it the name a
    table made as audit_patients has (SQLite keeps names only in the table's SQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE audit_patients RENAME CONSTRAINT audit_patients_new_pkey "
            "TO audit_patients_pkey"
        )


def downgrade() -> None:
    _links("audit_patients_old", ["patient", "event_seq"])
    op.execute(
        "INSERT INTO audit_patients_old (patient, event_seq, recorded) "
        "SELECT patient, event_seq, recorded FROM audit_patients"
    )
    op.drop_table("audit_patients")
    op.rename_table("audit_patients_old", "audit_patients")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE audit_patients RENAME CONSTRAINT audit_patients_old_pkey "
            "TO audit_patients_pkey"
        )
    op.create_index("audit_patients_recorded", "audit_patients", ["patient", "recorded"])
