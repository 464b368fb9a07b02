"""Patients' privacy choices (Consent) and revoked access (revocations).

Both live in the gateway's store and are held in memory by every replica;
each replica re-reads them when the store's revision counters say another
replica changed them (`Store.poll_interval`), and at once when it changed
them itself.

A Consent denies chosen data to chosen apps: its `provision` (type `permit`
or `deny`) holds nested `deny` provisions, each limited by `actor` (apps, as
identifiers with system `urn:ietf:params:oauth:client-id`), `class`
(resource types), `code` (codings matched against a resource's `category`,
`code` and `type`) and `securityLabel` (matched against `meta.security`).
Empty limits match everything. A top-level `deny` provision denies all the
patient's data to its actors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select

from bridge.auth.tokens import Principal
from bridge.errors import InvalidRequest, NotFound, Unauthorized, UnprocessableEntity
from bridge.fhir.compartment import patient_compartment
from bridge.fhir.ids import is_fhir_id
from bridge.store import Store, StoreUnavailable
from bridge.store.tables import consents, revocations

__all__ = ["DenyRule", "Privacy", "parse_consent"]

log = logging.getLogger("bridge.privacy")
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
_PROVISION_KEYS = {"type", "actor", "class", "code", "securityLabel", "provision", "action"}
_CODED = ("category", "code", "type")
_STATES = ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error")
# Provisions nested deeper than this are refused before anything walks them
# recursively (the R4B model's validation, `walk` below): a Consent needs two or
# three levels, and the body's depth limit (limits.max_json_depth, 64 by default)
# already stops ~31. The models' recursion gives out past ~100.
MAX_PROVISION_NESTING = 32
# Modifier elements change what a Consent means; the gateway cannot enforce what
# they say (a provision's modifierExtension is refused with its other unknown keys).
_MODIFIERS = ("modifierExtension", "implicitRules")
# The longest value each revocation key may have: the store's column widths.
_REVOCATION_KEYS = {"jti": 256, "client_id": 256, "patient": 128, "reason": 256}
# A revocation that lifts itself ends within ten years; without expires_in it never does.
MAX_REVOCATION_SECONDS = 10 * 365 * 86_400
Coding = tuple[str | None, str]


@dataclass(frozen=True)
class DenyRule:
    consent_id: str
    clients: frozenset[str] | None  # None: every app
    classes: frozenset[str] | None
    codes: frozenset[Coding] | None
    labels: frozenset[Coding] | None

    def applies(self, client_id: str, resource: dict[str, Any]) -> bool:
        if self.clients is not None and client_id not in self.clients:
            return False
        if self.classes is not None and resource.get("resourceType") not in self.classes:
            return False
        if self.codes is not None and not _match(self.codes, _codings(resource)):
            return False
        if self.labels is None:
            return True
        meta = resource.get("meta")
        return _match(
            self.labels, _coding_list(meta.get("security") if isinstance(meta, dict) else None)
        )


def _match(wanted: frozenset[Coding], found: list[Coding]) -> bool:
    return any((s, c) in wanted or (None, c) in wanted for s, c in found)


def _coding_list(codings: Any) -> list[Coding]:
    out: list[Coding] = []
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                out.append((system if isinstance(system, str) else None, coding["code"]))
    return out


def _codings(resource: dict[str, Any]) -> list[Coding]:
    out: list[Coding] = []
    for name in _CODED:
        value = resource.get(name)
        for concept in value if isinstance(value, list) else [value]:
            if isinstance(concept, dict):
                out.extend(_coding_list(concept.get("coding")))
    return out


def _problem(path: str, message: str) -> UnprocessableEntity:
    return UnprocessableEntity(f"{path}: {message}", expression=[path])


def _clients(provision: dict[str, Any], path: str) -> frozenset[str] | None:
    actors = provision.get("actor")
    if not actors:
        return None
    found = set()
    for i, actor in enumerate(actors):
        identifier = (actor.get("reference") or {}).get("identifier") or {}
        if identifier.get("system") != CLIENT_ID_SYSTEM or not identifier.get("value"):
            raise _problem(
                f"{path}.actor[{i}].reference",
                "name the app as an identifier with system "
                f"'{CLIENT_ID_SYSTEM}' and the app's client_id as value",
            )
        found.add(str(identifier["value"]))
    return frozenset(found)


def _codes(items: Any, path: str, *, concept: bool) -> frozenset[Coding] | None:
    if not items:
        return None
    found: set[Coding] = set()
    for i, item in enumerate(items):
        codings = item.get("coding") if concept else [item]
        parsed = _coding_list(codings)
        if not parsed:
            raise _problem(f"{path}[{i}]", "give a code (with its system)")
        found.update(parsed)
    return frozenset(found)


def _resource_type(code: str) -> bool:
    """Whether `code` names a concrete FHIR resource type (what `class` must name)."""
    # Only a name's shape reaches the cache: a client's codes must not fill it.
    return 0 < len(code) <= 64 and code.isascii() and code.isalpha() and _known_type(code)


@functools.lru_cache(maxsize=256)  # names a client sent: bounded
def _known_type(code: str) -> bool:
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    if code in ("Resource", "DomainResource"):
        return False
    try:
        return issubclass(get_fhir_model_class(code), Resource)
    except ValueError:
        return False


def _shown(value: Any) -> str:
    """A client's value as an error quotes it: at most 64 characters of it."""
    text = repr(value)
    return text if len(text) <= 66 else text[:64] + "..."


def _classes(provision: dict[str, Any], path: str, *, stored: bool) -> frozenset[str] | None:
    items = provision.get("class")
    if not items:
        return None
    if stored:
        # As it was enforced when it was accepted: a class without a code named nothing.
        return frozenset(str(c.get("code")) for c in items if c.get("code"))
    for i, item in enumerate(items):
        code = item.get("code")
        if not isinstance(code, str) or not _resource_type(code):
            # Without this, a rule for a class nobody has denies nothing, silently.
            raise _problem(
                f"{path}.class[{i}].code",
                f"{_shown(code)} is not a FHIR resource type; name one, e.g. 'Observation'"
                if code
                else "give the resource type as the code, e.g. 'Observation'",
            )
    return frozenset(str(c["code"]) for c in items)


def _check_nesting(top: Any, limit: int) -> None:
    """422 naming the first provision nested past `limit` (a loop, not recursion:
    the answer must not depend on how deep the stack already is)."""
    level = [("Consent.provision", top)]
    for depth in range(1, limit + 2):
        level = [
            (f"{path}.provision[{i}]", nested)
            for path, provision in level
            if isinstance(provision, dict) and isinstance(provision.get("provision"), list)
            for i, nested in enumerate(provision["provision"])
        ]
        if not level:
            return
        if depth > limit:
            raise _problem(level[0][0], f"provisions may nest at most {limit} levels deep")


def parse_consent(
    consent: Any, *, max_nesting: int | None = MAX_PROVISION_NESTING, stored: bool = False
) -> tuple[str, str, list[DenyRule]]:
    """(patient id, status, deny rules) of a Consent; 422 naming the element if unusable.

    `max_nesting=None` and `stored=True` are for Consents already stored: one
    accepted before a limit or a check existed stays enforced rather than dropped."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(consent, dict) or consent.get("resourceType") != "Consent":
        raise InvalidRequest("The body must be a Consent resource.")
    if max_nesting is not None:
        _check_nesting(consent.get("provision"), max_nesting)
    try:
        get_fhir_model_class("Consent").model_validate(consent)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _problem(f"Consent.{where}", first["msg"]) from None
    reference = str((consent.get("patient") or {}).get("reference", ""))
    if not reference.startswith("Patient/") or len(reference) <= len("Patient/"):
        raise _problem("Consent.patient", "reference the patient as Patient/[id]")
    patient = reference[len("Patient/") :]
    if not stored:
        if not is_fhir_id(patient):
            # `Patient/7/_history/2` or `Patient/ 7` would be a Consent for nobody.
            raise _problem(
                "Consent.patient.reference", "reference the patient as Patient/[id], nothing more"
            )
        modifier = next((name for name in _MODIFIERS if name in consent), None)
        if modifier is not None:
            raise _problem(f"Consent.{modifier}", "this gateway does not enforce it; leave it out")
    status = str(consent.get("status"))
    if status not in _STATES:
        raise _problem("Consent.status", f"{status!r} is not one of {', '.join(_STATES)}")
    top = consent.get("provision")
    if not isinstance(top, dict):
        raise _problem("Consent.provision", "say what is denied, and to which apps")
    rules: list[DenyRule] = []
    cid = str(consent.get("id", ""))

    def walk(provision: dict[str, Any], path: str, inherited: frozenset[str] | None) -> None:
        unknown = sorted(set(provision) - _PROVISION_KEYS - {"id", "extension"})
        if unknown:
            raise _problem(
                f"{path}.{unknown[0]}",
                "this gateway does not enforce it; use type, actor, class, code, "
                "securityLabel and nested provisions",
            )
        clients = _clients(provision, path) or inherited
        if provision.get("type") == "deny":
            classes = _classes(provision, path, stored=stored)
            rules.append(
                DenyRule(
                    cid,
                    clients,
                    classes,
                    _codes(provision.get("code"), f"{path}.code", concept=True),
                    _codes(provision.get("securityLabel"), f"{path}.securityLabel", concept=False),
                )
            )
        for i, nested in enumerate(provision.get("provision", [])):
            if nested.get("type") != "deny":
                raise _problem(
                    f"{path}.provision[{i}].type",
                    "nested provisions must deny (the base provision permits)",
                )
            walk(nested, f"{path}.provision[{i}]", clients)

    walk(top, "Consent.provision", None)
    if status == "active" and not rules:
        raise _problem("Consent.provision", "an active Consent must deny something")
    return patient, status, rules


@dataclass(frozen=True)
class Revocation:
    id: str
    jti: str | None
    client_id: str | None
    patient: str | None
    created: float
    expires: float | None

    def cuts(self, principal: Principal) -> bool:
        if self.expires is not None and self.expires < time.time():
            return False
        if self.jti is not None:
            return principal.token_id == self.jti
        if self.client_id != principal.client_id:
            return False
        if self.patient is not None and principal.patient != self.patient:
            return False
        # The app may be authorised again later: tokens issued after this revocation pass.
        issued = principal.issued_at
        return issued is None or issued <= self.created

    def json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "jti": self.jti,
            "client_id": self.client_id,
            "patient": self.patient,
            "created": _iso(self.created),
            "expires": _iso(self.expires) if self.expires else None,
        }
        return {k: v for k, v in out.items() if v is not None}


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        # A row stored before expires_in had an upper bound: listing it must not fail.
        return "9999-12-31T23:59:59+00:00" if seconds > 0 else "0001-01-01T00:00:00+00:00"


class Privacy:
    """The consents and revocations in force, kept in step with the store."""

    def __init__(self, store: Store, poll_interval: float) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._rules: dict[str, list[DenyRule]] = {}
        # (app, type) pairs some rule may deny, None standing for any: see `may_withhold`.
        self._reach: frozenset[tuple[str | None, str | None]] = frozenset()
        self._by_jti: dict[str, list[Revocation]] = {}
        self._by_client: dict[str, list[Revocation]] = {}
        self._seen: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self.healthy = True

    async def start(self) -> None:
        await self.reload()
        self._poller = asyncio.create_task(self._poll(), name="privacy-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                seen = await self.store.revisions()
                if seen != self._seen:
                    await self.reload()
                self.healthy = True
            except StoreUnavailable:
                if self.healthy:
                    log.error("the store did not answer; revocations and consents may be stale")
                self.healthy = False

    async def reload(self) -> None:
        seen = await self.store.revisions()
        async with self.store.read() as conn:
            consent_rows = (
                await conn.execute(select(consents.c.body).where(consents.c.status == "active"))
            ).all()
            revocation_rows = (await conn.execute(select(revocations))).mappings().all()
        rules: dict[str, list[DenyRule]] = {}
        for (body,) in consent_rows:
            stored = orjson.loads(body)
            try:
                patient, _, parsed = parse_consent(stored, max_nesting=None, stored=True)
            except (InvalidRequest, UnprocessableEntity) as exc:
                # Said by id and element only: the operator finds it, no patient data.
                log.warning(
                    "stored Consent %s is not enforced: %s",
                    stored.get("id") if isinstance(stored, dict) else "?",
                    exc.diagnostics,
                )
                continue
            rules.setdefault(patient, []).extend(parsed)
        # Lists: one token may be revoked twice (for an hour, then for good), and the
        # revocation that has ended must not hide the one still in force.
        by_jti: dict[str, list[Revocation]] = {}
        by_client: dict[str, list[Revocation]] = {}
        for row in revocation_rows:
            revocation = Revocation(
                row["id"],
                row["jti"],
                row["client_id"],
                row["patient"],
                row["created"],
                row["expires"],
            )
            if revocation.jti is not None:
                by_jti.setdefault(revocation.jti, []).append(revocation)
            elif revocation.client_id is not None:
                by_client.setdefault(revocation.client_id, []).append(revocation)
        reach = {
            (client, rtype)
            for patient_rules in rules.values()
            for rule in patient_rules
            for client in (rule.clients if rule.clients is not None else (None,))
            for rtype in (rule.classes if rule.classes is not None else (None,))
        }
        self._rules, self._by_jti, self._by_client, self._seen = rules, by_jti, by_client, seen
        self._reach = frozenset(reach)

    # -- revocations ------------------------------------------------------------

    async def guard(self, principal: Principal) -> None:
        """Refuse a token that a revocation covers (the auth middleware's guard)."""
        if principal.token_id is not None:
            for revocation in self._by_jti.get(principal.token_id, ()):
                if revocation.cuts(principal):
                    raise Unauthorized("The access token has been revoked.")
        for revocation in self._by_client.get(principal.client_id, ()):
            if revocation.cuts(principal):
                raise Unauthorized("Access for this app has been revoked.")

    async def revoke(self, body: Any) -> Revocation:
        if not isinstance(body, dict):
            raise InvalidRequest(
                "Send a JSON object: {jti} or {client_id} or {client_id, patient}."
            )
        unknown = sorted(set(body) - {"jti", "client_id", "patient", "reason", "expires_in"})
        if unknown:
            raise InvalidRequest(
                f"Unknown field {unknown[0]!r}; use jti, client_id, patient, reason, expires_in."
            )
        values = {k: body.get(k) for k in _REVOCATION_KEYS}
        for name, value in values.items():
            limit = _REVOCATION_KEYS[name]
            if value is not None and (
                not isinstance(value, str) or not value or len(value) > limit
            ):
                raise InvalidRequest(
                    f"{name} must be a non-empty string of at most {limit} characters."
                )
        if values["patient"] is not None and not is_fhir_id(values["patient"]):
            # `Patient/100001` would match no token's patient: a revocation of nothing.
            raise InvalidRequest("patient is the patient's FHIR id, like 100001.")
        if bool(values["jti"]) == bool(values["client_id"]):
            raise InvalidRequest("Give either jti, or client_id (with patient, optionally).")
        if values["jti"] and values["patient"]:
            raise InvalidRequest("A jti names one token; patient goes with client_id.")
        expires_in = body.get("expires_in")
        if expires_in is not None and (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not 0 < expires_in <= MAX_REVOCATION_SECONDS
        ):
            raise InvalidRequest(
                f"expires_in must be a whole number of seconds from 1 to {MAX_REVOCATION_SECONDS}"
                " (ten years); leave it out for a revocation that never ends."
            )
        now = time.time()
        revocation = Revocation(
            str(uuid.uuid4()),
            values["jti"],
            values["client_id"],
            values["patient"],
            now,
            now + expires_in if expires_in else None,
        )
        async with self.store.write() as conn:
            await conn.execute(
                revocations.insert().values(
                    id=revocation.id,
                    jti=revocation.jti,
                    client_id=revocation.client_id,
                    patient=revocation.patient,
                    reason=values["reason"],
                    created=revocation.created,
                    expires=revocation.expires,
                )
            )
            await Store.bump(conn, "revocations")
        await self.reload()
        return revocation

    async def revocations(self) -> list[Revocation]:
        out = [r for items in self._by_jti.values() for r in items]
        for items in self._by_client.values():
            out.extend(items)
        return sorted(out, key=lambda r: r.created)

    async def lift(self, revocation_id: str) -> None:
        async with self.store.write() as conn:
            done = await conn.execute(delete(revocations).where(revocations.c.id == revocation_id))
            if done.rowcount == 0:
                raise NotFound("There is no revocation with that id.")
            await Store.bump(conn, "revocations")
        await self.reload()

    # -- consents ---------------------------------------------------------------

    @property
    def withholding(self) -> bool:
        """Whether any Consent withholds anything at all (else nothing is ever withheld)."""
        return bool(self._rules)

    def may_withhold(self, client_id: str, rtype: str) -> bool:
        """Whether any Consent in force may withhold a `rtype` resource from the app:
        a search by any other app, or of another type, pays nothing for Consents."""
        reach = self._reach
        return bool(reach) and (
            (client_id, rtype) in reach
            or (client_id, None) in reach
            or (None, rtype) in reach
            or (None, None) in reach
        )

    def withheld_by(self, client_id: str, resource: dict[str, Any]) -> str | None:
        """The id of the Consent that denies `resource` to the app, if one does."""
        if not self._rules:
            return None
        for patient in patient_compartment().owners(resource):
            for rule in self._rules.get(patient, ()):
                if rule.applies(client_id, resource):
                    return rule.consent_id
        return None

    async def save_consent(self, consent: dict[str, Any], consent_id: str | None) -> dict[str, Any]:
        """Store a Consent (new when `consent_id` is None); the stored resource."""
        now = time.time()
        consent = dict(consent)
        consent["id"] = consent_id or str(uuid.uuid4())
        patient, status, _ = parse_consent(consent)
        async with self.store.write() as conn:
            version = 1
            if consent_id is not None:
                current = (
                    await conn.execute(
                        select(consents.c.version).where(consents.c.id == consent_id)
                    )
                ).scalar()
                if current is None:
                    raise NotFound("There is no Consent with that id.")
                version = int(current) + 1
            consent["meta"] = {
                **(consent.get("meta") or {}),
                "versionId": str(version),
                "lastUpdated": _iso(now),
            }
            values = {
                "patient": patient,
                "status": status,
                "body": orjson.dumps(consent).decode(),
                "updated": now,
                "version": version,
            }
            if consent_id is None:
                await conn.execute(consents.insert().values(id=consent["id"], **values))
            else:
                await conn.execute(
                    consents.update().where(consents.c.id == consent_id).values(**values)
                )
            await Store.bump(conn, "consents")
        await self.reload()
        return consent

    async def consent(self, consent_id: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            body = (
                await conn.execute(select(consents.c.body).where(consents.c.id == consent_id))
            ).scalar()
        if body is None:
            raise NotFound("There is no Consent with that id.")
        loaded: dict[str, Any] = orjson.loads(body)
        return loaded

    async def consents_of(self, patient: str | None, status: str | None) -> list[dict[str, Any]]:
        query = select(consents.c.body).order_by(consents.c.updated.desc())
        if patient is not None:
            query = query.where(consents.c.patient == patient)
        if status is not None:
            query = query.where(consents.c.status == status)
        async with self.store.read() as conn:
            rows = (await conn.execute(query.limit(1000))).all()
        return [orjson.loads(body) for (body,) in rows]

    async def delete_consent(self, consent_id: str) -> None:
        async with self.store.write() as conn:
            done = await conn.execute(delete(consents).where(consents.c.id == consent_id))
            if done.rowcount == 0:
                raise NotFound("There is no Consent with that id.")
            await Store.bump(conn, "consents")
        await self.reload()
