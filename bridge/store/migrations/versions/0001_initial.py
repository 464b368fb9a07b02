"""The first schema: audit trail, revocations, consents, idempotency keys, jobs, leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("recorded", sa.Float, nullable=False),
        sa.Column("client_id", sa.String(256)),
        sa.Column("interaction", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("audit_events_recorded", "audit_events", ["recorded"])
    op.create_table(
        "audit_patients",
        sa.Column("patient", sa.String(128), primary_key=True),
        sa.Column("event_seq", _Id, primary_key=True),
        sa.Column("recorded", sa.Float, nullable=False),
    )
    op.create_index("audit_patients_recorded", "audit_patients", ["patient", "recorded"])
    op.create_table(
        "revocations",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("jti", sa.String(256)),
        sa.Column("client_id", sa.String(256)),
        sa.Column("patient", sa.String(128)),
        sa.Column("reason", sa.String(256)),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("patient", sa.String(128), nullable=False, index=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "revisions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("headers", sa.Text),
        sa.Column("body", sa.LargeBinary),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created"])
    op.create_table(
        "jobs",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("lane", sa.String(256), nullable=False),
        sa.Column("client_id", sa.String(256)),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.Float),
        sa.Column("status", sa.Integer),
        sa.Column("headers", sa.Text),
        sa.Column("body", sa.LargeBinary),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("jobs_state_lane", "jobs", ["state", "lane", "seq"])
    op.create_table(
        "session_leases",
        sa.Column("system", sa.String(128), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "session_leases",
        "jobs",
        "idempotency_keys",
        "revisions",
        "consents",
        "revocations",
        "audit_patients",
        "audit_events",
    ):
        op.drop_table(table)
