"""Hypothesis settings the property tests share: the same examples on every run (CI
never meets a new failing case by chance), no example database, no deadline."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, settings


def repeatable(examples: int, *, allow: Sequence[HealthCheck] = ()) -> settings:
    """`examples` derandomized examples; `allow` lists the health checks not to apply."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(allow),
    )
