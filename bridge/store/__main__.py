"""`python -m bridge.store`: open the store whose URL is the first line of stdin
(UTF-8), migrating it to the newest schema, and exit 0 if it opened, 1 if not.

`bridge serve` starts it before loading its mappings (`migrate_ahead`), so that a new
store's migrations run on another core meanwhile. The URL comes on stdin, not argv,
because it may hold a password; a failure says nothing, since the gateway's own
`Store.open` meets the same problem and reports it.
"""

from __future__ import annotations

import asyncio
import sys

from bridge.store.core import Store


async def _open(url: str) -> None:
    store = await Store.open(url)
    await store.close()


def main() -> int:
    url = sys.stdin.buffer.readline().decode().rstrip("\n")
    try:
        asyncio.run(_open(url))
    except Exception:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
