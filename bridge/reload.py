"""Hot reload of mapping folders (`bridge serve --reload-mappings`).

A changed file is compiled and checked in a worker thread; only a clean
compile is swapped in, atomically, while a broken edit leaves the previous
mapping serving and logs its `file:line` problems. Systems whose connection,
session and WSDL did not change keep their backend and legacy sessions;
replaced backends are closed after in-flight requests had time to finish.
Nothing an edit does stops the watching: a reload that fails in any way is
logged as refused, and the next edit is tried again. `/readyz` tells whether
the last edit was refused, since when, and how many problems it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bridge.errors import ConfigError, FhirError
from bridge.gateway import Gateway
from bridge.mapping.compiled import CompiledSystem
from bridge.soap.backend import Backend

__all__ = ["MappingReloader"]

log = logging.getLogger("bridge.reload")


class MappingReloader:
    def __init__(
        self,
        holder: object,
        folders: Sequence[Path],
        compile_all: Callable[[], list[CompiledSystem]],
        build: Callable[[list[CompiledSystem], dict[str, Backend]], Gateway],
        *,
        grace: float = 30.0,
        retry: float = 5.0,
    ) -> None:
        self.holder = holder
        self.folders = list(folders)
        self.compile_all = compile_all
        self.build = build
        self.grace = grace
        self.retry = retry
        self.reloads = 0
        self.failures = 0
        # Since when the files on disk are not what serves (a refused edit), and
        # how many problems that edit has; None once a reload succeeds again.
        self.refused_since: float | None = None
        self.problems = 0
        self._stop = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    async def reload(self, changed: Sequence[str] = ()) -> bool:
        """Compile every folder and swap the gateway in; False when the edit is broken.

        `changed`: the files whose edit set this reload off, named in the log when
        the failure does not say which file it is about."""
        try:
            systems = await asyncio.to_thread(self.compile_all)
            current: Gateway = self.holder.current  # type: ignore[attr-defined]
            gateway = self.build(systems, current.backends)
        except Exception as exc:
            self.failures += 1
            problems: list[object] = [*exc.problems] if isinstance(exc, ConfigError) else []
            for problem in problems or [_describe(exc, changed)]:
                log.error("mapping not reloaded, the previous one keeps serving: %s", problem)
            if self.refused_since is None:
                self.refused_since = time.time()
            self.problems = len(problems) or 1
            return False
        old: Gateway = self.holder.swap(gateway)  # type: ignore[attr-defined]
        kept = {id(b) for b in gateway.backends.values()}
        retired = [b for b in old.backends.values() if id(b) not in kept]
        if retired:
            task = asyncio.create_task(self._close_later(retired))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.reloads += 1
        self.refused_since = None
        self.problems = 0
        log.info("mappings reloaded", extra={"resources": sorted(gateway.routes)})
        return True

    async def _close_later(self, backends: list[Backend]) -> None:
        await asyncio.sleep(self.grace)
        for backend in backends:
            await backend.close()

    async def watch(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            try:
                async for changes in awatch(*self.folders, stop_event=self._stop, debounce=200):
                    await self.reload(sorted({path for _change, path in changes}))
            except Exception as exc:
                # Watching itself failed (a folder gone, too many watches): later
                # edits must still load, so watch again after a pause.
                log.error(
                    "watching the mapping folders failed (%s); watching again in %g s",
                    type(exc).__name__,
                    self.retry,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.retry)

    def stop(self) -> None:
        self._stop.set()

    def state(self) -> dict[str, object]:
        """For `/readyz`: whether what serves is what the folders hold. A refused
        edit names no file or value here (the log has them: `bridge.reload`)."""
        if self.refused_since is None:
            return {"reload": "current", "reloads": self.reloads}
        since = datetime.fromtimestamp(self.refused_since, UTC)
        return {
            "reload": "refused",
            "refused_since": since.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "problems": self.problems,
            "reloads": self.reloads,
        }


def _shown(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _describe(exc: Exception, changed: Sequence[str]) -> str:
    """What failed, without the exception's text: it may quote the files (patient data)."""
    where = ", ".join(_shown(p) for p in changed) or "the mapping folders"
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or type(exc).__name__
        return f"{_shown(str(exc.filename))}: cannot read file: {reason}"
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"{where}: not {exc.encoding} text (byte {exc.start}: {exc.reason}); "
            f"save the file as {exc.encoding}"
        )
    if isinstance(exc, FhirError):  # its diagnostics never carry data
        return f"{where}: {exc.diagnostics}"
    return (
        f"{where}: the edit could not be loaded ({type(exc).__name__}); "
        "run `bridge check` on the folder to see why"
    )
