"""Search: legacy paging of every style behind stateless FHIR pages.

A page token holds the *legacy* position where the next page starts, so a
page is the same whichever replica serves it and whatever the gateway itself
filters out. Paging styles:

- cursor: a session-bound cursor; the next page continues it on the session
  that holds it (waiting a little for that session when it is busy), else the
  search is replayed up to the position;
- offset: `{offset}` and `{limit}` in the request, random access;
- page: `{page}` and `{size}`, random access by page;
- none: one answer holds every match; the gateway pages it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from lxml import etree

from bridge.gateway.steps import run_steps
from bridge.mapping.compiled import CompiledSearch, RunContext
from bridge.soap.backend import Backend
from bridge.soap.pool import Session
from bridge.soap.xml import SoapFault

__all__ = ["MAX_SCANNED", "Page", "fetch_page"]

# The most legacy records one FHIR page may read past: a page that filters
# (or drops repeats) ends early, with a `next` link, instead of reading on.
MAX_SCANNED = 5000


@dataclass
class Page:
    resources: list[dict[str, Any]]
    records: list[etree._Element]
    total: int | None
    next_position: int | None  # None: no further page
    hint: tuple[str, str, int] | None = None
    contexts: list[RunContext] = field(default_factory=list)


@dataclass
class _Stream:
    """Where the legacy side stands while records are read."""

    total: int | None = None
    exhausted: bool = False
    cursor: str | None = None
    cursor_position: int = 0
    page_end: int = 0  # legacy index just after the last record fetched so far


def _search_key(search: CompiledSearch, values: dict[str, str]) -> str:
    """Which search a legacy cursor belongs to: its operation and the values sent."""
    raw = orjson.dumps([search.call.operation, values], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def _resumable(backend: Backend, hint: tuple[str, str, int] | None, start: int, key: str) -> bool:
    """Whether this process's session of the hint still holds its cursor at `start`.

    Only then is that session worth waiting for; otherwise the search is
    replayed at once on whichever session is free.
    """
    if hint is None or hint[2] != start:
        return False
    session = backend.pool.session(hint[0])
    return session is not None and session.holds(hint[1], start, key)


def _total(reply: etree._Element, search: CompiledSearch) -> int | None:
    if search.total is None:
        return None
    text = (reply.findtext(search.total) or "").strip()
    return int(text) if text.isdigit() else None


async def _records(
    backend: Backend,
    session: Session,
    search: CompiledSearch,
    ctx: RunContext,
    start: int,
    hint: tuple[str, str, int] | None,
    state: _Stream,
    key: str,
) -> AsyncGenerator[tuple[int, etree._Element]]:
    paging = search.paging
    style = paging.style
    size = paging.page_size or 50

    async def call(extra: dict[str, str]) -> list[etree._Element]:
        ctx.values = {**ctx.values, **extra}
        return await run_steps(backend, session, search.steps, ctx)

    def take(replies: list[etree._Element]) -> list[etree._Element]:
        records = [r for reply in replies for r in reply.iterfind(search.records)]
        for reply in replies:
            state.total = _total(reply, search) if state.total is None else state.total
        return records

    if style in ("offset", "page"):
        position = start
        while True:
            if style == "offset":
                replies = await call({"offset": str(position), "limit": str(size)})
                skip, first = 0, position
            else:
                page = paging.first_page + position // size
                replies = await call({"page": str(page), "size": str(size)})
                skip, first = position % size, position - position % size
            records = take(replies)
            state.page_end = first + len(records)
            for i, record in enumerate(records[skip:], start=first + skip):
                yield i, record
            position = first + len(records)
            done = len(records) < size or (state.total is not None and position >= state.total)
            if done or not records:
                state.exhausted = True
                return
        return

    if style == "none":
        records = take(await call({}))
        state.page_end = len(records)
        state.total = len(records) if state.total is None else state.total
        for i, record in enumerate(records[start:], start=start):
            yield i, record
        state.exhausted = True
        return

    # cursor
    assert paging.next is not None
    assert paging.cursor is not None
    position = 0
    reply: etree._Element | None = None
    outcome = "replayed: cursor not held"  # used by another link, or forgotten
    if hint is None:
        outcome = "first page" if start == 0 else "replayed: no cursor in the link"
    elif session.key != hint[0]:
        if backend.pool.session(hint[0]) is None:
            outcome = "replayed: session gone"  # closed, or another process's
        elif _resumable(backend, hint, start, key):
            outcome = "replayed: session busy"  # the wait for it ran out
    elif session.take_cursor(hint[1], start, key):
        # Claimed before the call: a second use of the same link replays, as the
        # cursor will have moved on whatever this call does.
        try:
            reply = await backend.call(
                session, paging.next.template, paging.next.request({"cursor": hint[1]})
            )
            position = start
            outcome = "resumed"
        except SoapFault as fault:
            if fault.vendor_code not in paging.invalid_cursor_codes:
                raise
            reply = None
            outcome = "replayed: cursor invalid"
    if reply is None:
        replies = await call({})
        reply = replies[-1]
    # Counted once the page's first answer is in: an attempt that failed (an expired
    # session, tried again after a login) is not a page.
    backend.stats.pages[outcome] += 1
    while True:
        records = take([reply])
        state.cursor = (reply.findtext(paging.cursor) or "").strip() or None
        state.page_end = position + len(records)
        state.cursor_position = state.page_end
        for i, record in enumerate(records, start=position):
            if i >= start:
                yield i, record
        position += len(records)
        if state.cursor is None or not records:
            state.exhausted = True
            return
        reply = await backend.call(
            session, paging.next.template, paging.next.request({"cursor": state.cursor})
        )


async def fetch_page(
    backend: Backend,
    search: CompiledSearch,
    values: dict[str, str],
    start: int,
    count: int,
    hint: tuple[str, str, int] | None,
    accept: Callable[[etree._Element, RunContext], dict[str, Any] | None],
    *,
    filtered: bool,
) -> Page:
    """One FHIR page: up to `count` accepted resources from legacy position `start`."""

    async def unpaged(session: Session) -> Page:
        # Every match is in one answer: page it here, with an exact total even
        # when the gateway filters (it sees everything anyway).
        ctx = RunContext(values=dict(values))
        replies = await run_steps(backend, session, search.steps, ctx)
        records = [r for reply in replies for r in reply.iterfind(search.records)]
        page = Page([], [], None, None)
        accepted = 0
        for index, record in enumerate(records):
            if index < start and not filtered:
                continue
            resource = accept(record, ctx)
            if resource is None:
                continue
            accepted += 1
            if index < start:
                continue
            if len(page.resources) < count:
                page.resources.append(resource)
                page.records.append(record)
            elif page.next_position is None:
                page.next_position = index
                if not filtered:
                    break
        legacy_total = _total(replies[-1], search) if replies else None
        page.total = accepted if filtered else (legacy_total or len(records))
        return page

    key = _search_key(search, values) if search.paging.style == "cursor" else ""

    async def streamed(session: Session) -> Page:
        ctx = RunContext(values=dict(values))
        state = _Stream()
        page = Page([], [], None, None)
        last = start - 1
        stream = _records(backend, session, search, ctx, start, hint, state, key)
        try:
            async for index, record in stream:
                last = index
                resource = accept(record, ctx)
                if resource is not None:
                    page.resources.append(resource)
                    page.records.append(record)
                if len(page.resources) >= count or index - start >= MAX_SCANNED:
                    break
        finally:
            await stream.aclose()
        # More may follow when the legacy page has records left or can go on;
        # a last page may then come back empty, which FHIR allows.
        more = last + 1 < state.page_end or not state.exhausted
        if state.total is not None and not filtered:
            more = last + 1 < state.total
            page.total = state.total
        page.next_position = last + 1 if more and count > 0 else None
        at_cursor = state.cursor is not None and page.next_position == state.cursor_position
        if search.paging.style == "cursor" and at_cursor:
            assert state.cursor is not None
            session.remember_cursor(state.cursor, state.cursor_position, key)
            page.hint = (session.key, state.cursor, state.cursor_position)
        return page

    work = unpaged if search.paging.style == "none" else streamed
    # Waiting for the session of the hint only pays when its cursor is still there.
    prefer = hint[0] if hint is not None and _resumable(backend, hint, start, key) else None
    return await backend.run(work, prefer=prefer)
