"""A log stream that counts its writes, for the middleware tests."""

from __future__ import annotations

import io


class CountedStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)
