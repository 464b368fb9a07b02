"""The gateway's store: its tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Changes to these tables go with a migration in `migrations/versions/`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "audit_events",
    "audit_patients",
    "audit_patients_pending",
    "consents",
    "idempotency_keys",
    "job_lanes",
    "jobs",
    "metadata",
    "revisions",
    "revocations",
    "session_leases",
]

metadata = MetaData()

# SQLite's rowid needs INTEGER exactly; PostgreSQL gets a 64-bit identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("recorded", Float, nullable=False),  # seconds since the epoch, UTC
    Column("client_id", String(256)),
    Column("interaction", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),  # the AuditEvent, JSON
)
Index("audit_events_recorded", audit_events.c.recorded)

# Every patient an event touched (a search may return several patients' data).
# One B-tree per link (SQLite: WITHOUT ROWID), keyed for "this patient, this period".
audit_patients = Table(
    "audit_patients",
    metadata,
    Column("patient", String(128), primary_key=True),
    Column("recorded", Float, primary_key=True),
    Column("event_seq", _Id, primary_key=True),
    sqlite_with_rowid=False,
)

# Links the SQLite audit appender committed with their events and has not yet moved
# into audit_patients: appended in commit order (a search's 50 links fill about one
# page instead of touching 50 of audit_patients), moved in batches in patient order.
# A patient's trail reads both tables (migration 0004).
audit_patients_pending = Table(
    "audit_patients_pending",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("patient", String(128), nullable=False),
    Column("recorded", Float, nullable=False),
    Column("event_seq", _Id, nullable=False),
)

revocations = Table(
    "revocations",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("jti", String(256)),
    Column("client_id", String(256)),
    Column("patient", String(128)),
    Column("reason", String(256)),
    Column("created", Float, nullable=False),
    Column("expires", Float),
)

consents = Table(
    "consents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("patient", String(128), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("body", Text, nullable=False),  # the Consent, JSON
    Column("updated", Float, nullable=False),
    Column("version", Integer, nullable=False),
)

# One counter per kind of shared state; replicas poll them to learn of changes.
revisions = Table(
    "revisions",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("client_id", String(256), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | done
    Column("status", Integer),
    Column("headers", Text),  # JSON object
    Column("body", LargeBinary),
    Column("created", Float, nullable=False),
)
Index("idempotency_keys_created", idempotency_keys.c.created)

# Writes accepted with `Prefer: respond-async`, delivered in order per `lane`.
jobs = Table(
    "jobs",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("lane", String(256), nullable=False),  # e.g. the patient: one lane, one order
    Column("client_id", String(256)),
    Column("request", Text, nullable=False),  # method, path, headers, body (JSON)
    Column("state", String(16), nullable=False),  # queued | running | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("status", Integer),
    Column("headers", Text),
    Column("body", LargeBinary),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)
Index("jobs_state_lane", jobs.c.state, jobs.c.lane, jobs.c.seq)

# Every lane an unfinished job waits in (migration 0002); gone once it finishes.
job_lanes = Table(
    "job_lanes",
    metadata,
    Column("lane", String(256), primary_key=True),
    Column("seq", _Id, primary_key=True),
)
Index("job_lanes_seq", job_lanes.c.seq)

# The global legacy session budget: one row per session slot a replica holds.
session_leases = Table(
    "session_leases",
    metadata,
    Column("system", String(128), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires", Float, nullable=False),
)
