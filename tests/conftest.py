"""Test-wide settings: Hypothesis profiles (small budgets in CI, large ones by hand with BOROUGH_SOAK=1)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "soak",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
SOAK = os.environ.get("BOROUGH_SOAK") == "1"
settings.load_profile("soak" if SOAK else "ci")
