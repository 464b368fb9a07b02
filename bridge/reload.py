"""Hot reload of mapping folders (`bridge serve --reload-mappings`).

A changed file is compiled and checked in a worker thread; only a clean
compile is swapped in, atomically, while a broken edit leaves the previous
mapping serving and logs its `file:line` problems. Systems whose connection,
session and WSDL did not change keep their backend and legacy sessions;
replaced backends are closed after in-flight requests had time to finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.errors import ConfigError
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
    ) -> None:
        self.holder = holder
        self.folders = list(folders)
        self.compile_all = compile_all
        self.build = build
        self.grace = grace
        self.reloads = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    async def reload(self) -> bool:
        """Compile every folder and swap the gateway in; False when the edit is broken."""
        try:
            systems = await asyncio.to_thread(self.compile_all)
            current: Gateway = self.holder.current  # type: ignore[attr-defined]
            gateway = self.build(systems, current.backends)
        except ConfigError as exc:
            self.failures += 1
            for problem in exc.problems:
                log.error("mapping not reloaded, the previous one keeps serving: %s", problem)
            return False
        old: Gateway = self.holder.swap(gateway)  # type: ignore[attr-defined]
        kept = {id(b) for b in gateway.backends.values()}
        retired = [b for b in old.backends.values() if id(b) not in kept]
        if retired:
            task = asyncio.create_task(self._close_later(retired))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.reloads += 1
        log.info("mappings reloaded", extra={"resources": sorted(gateway.routes)})
        return True

    async def _close_later(self, backends: list[Backend]) -> None:
        await asyncio.sleep(self.grace)
        for backend in backends:
            await backend.close()

    async def watch(self) -> None:
        from watchfiles import awatch

        async for _changes in awatch(*self.folders, stop_event=self._stop, debounce=200):
            await self.reload()

    def stop(self) -> None:
        self._stop.set()
