"""Asynchronous writes (`Prefer: respond-async`): a durable queue in the gateway's
store, delivered in order per patient by every gateway process.

`intake` checks what is accepted, `queue` keeps the jobs, `worker` delivers
them through the gateway, `api` answers the 202 and the status URL.
"""

from bridge.asyncwrites.api import STATUS_PATH, AsyncWrites, async_routes
from bridge.asyncwrites.intake import (
    check_create,
    check_entries,
    check_update,
    wants_async,
    write_entries,
)
from bridge.asyncwrites.queue import Job, JobQueue
from bridge.asyncwrites.worker import Deliveries, note_attempt_call

__all__ = [
    "STATUS_PATH",
    "AsyncWrites",
    "Deliveries",
    "Job",
    "JobQueue",
    "async_routes",
    "check_create",
    "check_entries",
    "check_update",
    "note_attempt_call",
    "wants_async",
    "write_entries",
]
