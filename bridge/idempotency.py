"""`Idempotency-Key` on POST, PUT and PATCH: the first result is stored and replayed.

A client that sends `Idempotency-Key: <key>` (1 to 256 visible ASCII
characters, optionally quoted as in draft-ietf-httpapi-idempotency-key-header)
may repeat the request safely, for example after a lost connection:

- the first request runs; its result (status, Location/ETag/Content-Location
  headers, body) is stored under (its owner, key): the owner is the token's
  client, user and patient context (`owner_of`), so another user or another
  patient launch of the same app never gets it; for them the key is new;
- the same request again (same method, path, query, If-Match, If-None-Exist,
  `Prefer: respond-async` and body bytes) gets the stored result, marked
  `Idempotent-Replayed: true`, and nothing reaches the legacy system;
- a different request with a key already used is 422;
- a repeat while the first is still running waits up to `idempotency.wait`
  seconds for it, then answers 409 + Retry-After.

What is stored: every final result, 4xx included. Not stored (the client may
retry with the same key): answers that depend on the moment or the
credentials rather than on the request (401, 403, 408, 409, 429) and server
errors that mean the write did not happen (503 and the like). A 504 whose
outcome is unknown, and a transaction that failed half-way, *are* stored: a
blind retry could apply them twice. Keys expire after `idempotency.ttl`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.sql.expression import Executable
from starlette.requests import Request
from starlette.responses import Response

from bridge.auth.tokens import Principal
from bridge.errors import FhirError, InvalidRequest, ServiceUnavailable, UnprocessableEntity
from bridge.gateway.lookups import OutcomeUnknown
from bridge.store import Store, StoreUnavailable
from bridge.store.tables import idempotency_keys

__all__ = ["MAX_KEY", "Idempotency", "IdempotencyConflict", "owner_of"]

log = logging.getLogger("bridge.idempotency")
MAX_KEY = 256
_REPLAYED_HEADERS = ("location", "etag", "content-location", "last-modified", "retry-after")
_NOT_STORED = {401, 403, 408, 409, 429}


class IdempotencyConflict(FhirError):
    status = 409
    code = "conflict"
    default_diagnostics = "A request with this Idempotency-Key is still being processed."

    def __init__(self, diagnostics: str | None = None) -> None:
        super().__init__(diagnostics, headers={"Retry-After": "1"})


_EARLIER = (
    "This Idempotency-Key was used before the gateway was upgraded, and its result "
    "cannot be replayed; check whether that request was applied, then use a new key."
)


def owner_of(principal: Principal | None) -> str:
    """Who a stored result belongs to: the app, the user and the patient context.

        owner_of(principal)  # 'p1:3f9c...' (a SHA-256, so the store holds no user ids)

    A new token of the same user and launch gets the same owner; another user
    (`sub`, `fhirUser`) or another patient of the same app gets another. The
    scopes are left out on purpose: a refreshed token with other scopes is the
    same caller, and a repeat of its write must not be applied twice.
    """
    if principal is None:
        # Authentication off: no caller has an identity and every caller may read
        # and write everything, so there is only one owner to keep results for.
        return "anonymous"
    parts = [principal.client_id, principal.subject, principal.patient, principal.fhir_user]
    return "p1:" + hashlib.sha256(orjson.dumps(parts)).hexdigest()


@dataclass
class _Claim:
    owner: str
    key: str
    created: float


def parse_key(raw: str) -> str:
    """The key of an `Idempotency-Key` header (400 when unusable)."""
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters, e.g. a UUID."
        )
    return key


def _fingerprint(request: Request, body: bytes) -> str:
    prefer = request.headers.get("prefer", "")
    parts = [
        request.method,
        request.url.path,
        request.url.query,
        request.headers.get("if-match", ""),
        request.headers.get("if-none-exist", ""),
        "async" if "respond-async" in prefer else "",
    ]
    digest = hashlib.sha256("\n".join(parts).encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def _stored(status: int, error: FhirError | None) -> bool:
    """Is this result final for the request, so that a repeat must get it again?"""
    if status in _NOT_STORED:
        return False
    if status < 500:
        return True
    # The write may have happened: a retry must not apply it twice.
    return error is not None and (isinstance(error, OutcomeUnknown) or error.code == "incomplete")


class Idempotency:
    """Stored first results of requests with an Idempotency-Key."""

    def __init__(self, store: Store, ttl: float, wait: float, pending_timeout: float) -> None:
        self.store = store
        self.ttl = ttl
        self.wait = wait
        self.pending_timeout = pending_timeout

    async def run(
        self,
        request: Request,
        owner: str,
        raw_key: str,
        handler: Callable[[Request], Awaitable[Response]],
        render: Callable[[FhirError], Response],
        max_body: int,
        earlier: str | None = None,
    ) -> Response:
        """Answer `request` with `handler`, at most once per (owner, key); `owner_of` names
        the owner. `earlier` is where the same caller's keys were kept before owners
        (the bare client id, "-" without one): a key found there is refused, never run
        again, until it expires."""
        key = parse_key(raw_key)
        body = await request.body()
        if len(body) > max_body:
            return await handler(request)  # refused as too large; nothing to remember
        fingerprint = _fingerprint(request, body)
        waited_until = time.monotonic() + self.wait
        pause = 0.05
        while True:
            claim, replay = await self._claim(owner, key, fingerprint, earlier)
            if claim is not None:
                break
            if replay is not None:
                return replay
            if time.monotonic() >= waited_until:
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still being processed; "
                    "retry after it has finished."
                )
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 2)
        try:
            response = await handler(request)
            error = None
        except FhirError as exc:
            response, error = render(exc), exc
        except BaseException:
            await self._release(claim)
            raise
        if _stored(response.status_code, error):
            await self._save(claim, response)
        else:
            await self._release(claim)
        return response

    def _insert(self, **values: object) -> Executable:
        return self.store.insert(idempotency_keys).values(**values).on_conflict_do_nothing()

    async def _claim(
        self, owner: str, key: str, fingerprint: str, earlier: str | None = None
    ) -> tuple[_Claim | None, Response | None]:
        """(claim, None) to run the request; (None, response) to replay; (None, None) to wait."""
        now = time.time()
        # The column `client_id` holds the owner (`owner_of`), not the bare client id.
        row_is = and_(idempotency_keys.c.client_id == owner, idempotency_keys.c.key == key)
        try:
            async with self.store.write() as conn:
                # An expired key, or a claim whose request never finished (its
                # process died), is free again.
                await conn.execute(
                    delete(idempotency_keys).where(
                        row_is,
                        or_(
                            idempotency_keys.c.created < now - self.ttl,
                            and_(
                                idempotency_keys.c.state == "pending",
                                idempotency_keys.c.created < now - self.pending_timeout,
                            ),
                        ),
                    )
                )
                if earlier is not None and earlier != owner:
                    before = await conn.execute(
                        select(idempotency_keys.c.key).where(
                            idempotency_keys.c.client_id == earlier,
                            idempotency_keys.c.key == key,
                            idempotency_keys.c.created >= now - self.ttl,
                        )
                    )
                    if before.first() is not None:
                        raise UnprocessableEntity(_EARLIER)
                inserted = await conn.execute(
                    self._insert(
                        client_id=owner,
                        key=key,
                        request_hash=fingerprint,
                        state="pending",
                        created=now,
                    )
                )
                if inserted.rowcount == 1:
                    return _Claim(owner, key, now), None
                row = (
                    (await conn.execute(select(idempotency_keys).where(row_is))).mappings().first()
                )
        except StoreUnavailable:
            raise ServiceUnavailable(
                "The gateway cannot check the Idempotency-Key now; the request was not run."
            ) from None
        if row is None:
            return None, None  # deleted in between: try again
        if row["request_hash"] != fingerprint:
            raise UnprocessableEntity(
                "This Idempotency-Key was used for a different request; use a new key for "
                "a new request."
            )
        if row["state"] != "done":
            return None, None
        headers = orjson.loads(row["headers"] or "{}")
        headers["Idempotent-Replayed"] = "true"
        return None, Response(row["body"] or b"", int(row["status"]), headers)

    async def _save(self, claim: _Claim, response: Response) -> None:
        headers = {
            name: value
            for name, value in response.headers.items()
            if name in _REPLAYED_HEADERS or name == "content-type"
        }
        try:
            async with self.store.write() as conn:
                await conn.execute(
                    update(idempotency_keys)
                    .where(
                        idempotency_keys.c.client_id == claim.owner,
                        idempotency_keys.c.key == claim.key,
                        idempotency_keys.c.created == claim.created,
                    )
                    .values(
                        state="done",
                        status=response.status_code,
                        headers=orjson.dumps(headers).decode(),
                        body=bytes(response.body),
                    )
                )
        except StoreUnavailable:
            # The answer still goes out; a repeat is refused (409) until the claim times out.
            log.error("the result of an idempotent request could not be stored")

    async def _release(self, claim: _Claim) -> None:
        try:
            async with self.store.write() as conn:
                await conn.execute(
                    delete(idempotency_keys).where(
                        idempotency_keys.c.client_id == claim.owner,
                        idempotency_keys.c.key == claim.key,
                        idempotency_keys.c.created == claim.created,
                    )
                )
        except StoreUnavailable:
            log.error("an idempotency claim could not be released; it times out instead")

    async def purge(self) -> int:
        """Forget expired keys."""
        async with self.store.write() as conn:
            done = await conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created < time.time() - self.ttl)
            )
        return int(done.rowcount or 0)
