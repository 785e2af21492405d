"""Hypothesis budgets that scale with the loaded profile: small in CI ("ci"), large under BOROUGH_SOAK=1."""

from __future__ import annotations

from hypothesis import settings


def examples(ci: int, soak_divisor: int = 1) -> int:
    """``ci`` examples under the CI profile; the soak profile's budget divided by ``soak_divisor`` (for tests
    whose examples are expensive) when a larger profile is loaded."""
    loaded = settings.default.max_examples
    return ci if loaded <= 50 else max(ci, loaded // soak_divisor)
