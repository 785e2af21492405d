"""Test-wide settings: Hypothesis profiles (small budgets in CI, large ones by hand with BOROUGH_SOAK=1), and a
full garbage collection whenever the resident size has grown a lot since the last one (see RSS_SLACK)."""

from __future__ import annotations

import gc
import os

import pytest
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


# --- memory between tests ---------------------------------------------------------------------------------------
# A simulated cluster is a web of reference cycles (nodes, tasks, links), so what a test leaves behind is freed
# only by a full collection, which a large heap makes rare: the three tests of tests/security/test_slow_followers.py
# (100 KB values) took the suite's process from 400 MB to 2.1 GB of RSS, each keeping the last one's cluster alive.
# A full collection after every test would cost the suite about a minute, so it runs after a test that took
# LONG_TEST seconds or more (the ones that build big clusters or big data; a collection is a few per cent of such a
# test), and whenever the resident size has grown by RSS_SLACK since the last one.
LONG_TEST = 1.0
RSS_SLACK = 256 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_rss_after_collect = 0
_long = False


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # (not Linux: only long tests collect)
        return 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _long
    if report.when == "call" and report.duration >= LONG_TEST:
        _long = True


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    global _rss_after_collect, _long
    if _long or _rss() > _rss_after_collect + RSS_SLACK:
        gc.collect()
        _rss_after_collect = _rss()
    _long = False
