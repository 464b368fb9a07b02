"""Start-up: the collector held while the app loads, the heap settled when it starts."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

from bridge.app import create_app, hold_collections
from bridge.settings import load_settings


def test_the_lifespan_settles_the_heap_and_turns_the_held_collector_back_on(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "systems": [{"path": str(root / "mappings" / "hospital")}],
                "auth": {"mode": "off"},
                "paging_key": "k" * 32,
                "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            }
        )
    )
    seen: list[tuple[bool, int]] = []
    threshold = gc.get_threshold()
    hold_collections()
    try:
        assert not gc.isenabled()
        app = create_app(load_settings(config))
        assert not gc.isenabled()  # loading the mappings collects nothing

        async def run() -> None:
            async with app.router.lifespan_context(app):
                seen.append((gc.isenabled(), gc.get_freeze_count()))

        asyncio.run(run())
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert seen and seen[0][0]  # serving: the collector is on again
    assert seen[0][1] > 100_000  # and what start-up built is out of its sight
