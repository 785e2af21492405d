"""The status page in a real headless browser: three ``borough serve`` processes with ``--metrics-listen``, a few
partitions written, and each node's page loaded in Debian's Chromium through its chromedriver. The page's own
JavaScript fetches ``/status`` and fills the tables; the test reads what the browser rendered.

``BOROUGH_UPDATE_SCREENSHOT=1`` also writes the screenshot to ``docs/img/status.png`` (the one the operations
guide shows); otherwise it goes to the test's temporary directory only.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import trio

import borough

from .test_processes import Proc, free_port, procs  # noqa: F401 - procs is a fixture
from .webdriver import INSTALL_HINT, Browser, find_browser

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "status.png"

# The page fills its tables from /status, asynchronously: wait for what the test then checks.
ROWS = """
const rows = id => [...document.querySelectorAll('#' + id + ' tbody tr')].map(
  tr => [...tr.querySelectorAll('td')].map(td => td.textContent));
const members = rows('members'), partitions = rows('partitions');
if (members.length < 3 || !partitions.some(p => p[0] === 'users' && p[2] !== '-')) return null;
return {node: document.getElementById('node').textContent, members, partitions,
        ring: [...document.querySelectorAll('#ring span')].map(e => e.textContent),
        meta: document.getElementById('meta').textContent};
"""

LATE = "return [...document.querySelectorAll('#partitions td')].some(td => td.textContent === 'late')"


def browser_or_skip() -> tuple[str, str]:
    found = find_browser()
    if found is None:
        if os.environ.get("BOROUGH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BOROUGH_REQUIRE_BROWSER=1 but the browser is missing: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    return found


async def start_with_http(tmp_path: Path, made: list[Proc], n: int) -> list[tuple[Proc, str]]:
    """n serve processes, each with its HTTP listener on its own free port; (process, page URL) pairs."""
    out: list[tuple[Proc, str]] = []
    for i in range(n):
        http = f"127.0.0.1:{free_port()}"
        join = out[0][0].address if out else ""
        p = Proc(tmp_path / f"n{i}", free_port(), join=join, env={"BOROUGH_METRICS_LISTEN": http})
        made.append(p)
        p.start()
        await p.wait_serving()
        out.append((p, f"http://{http}/"))
    for name in ("users", "orders", "audit"):
        await put_one([p.address for p, _ in out], name)
    return out


async def put_one(addresses: list[str], partition: str) -> None:
    async with borough.open_client(addresses) as client:
        with trio.fail_after(60):
            await client.partition(partition).put("k", 1)
            for _ in range(600):  # until it has three voters: then every node hosts a replica of it
                if sum(r.role != "learner" for r in (await client.partition(partition).info()).peers) == 3:
                    break
                await trio.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_status_page_shows_the_members_and_the_partitions_in_a_real_browser(
    tmp_path: Path,
    procs: list[Proc],  # noqa: F811
) -> None:
    chromium, driver = browser_or_skip()
    nodes = trio.run(start_with_http, tmp_path, procs, 3)
    addresses = sorted(p.address for p, _ in nodes)
    with Browser(chromium, driver, tmp_path / "chromium-profile") as browser:
        for proc, url in nodes:
            browser.get(url)
            seen = browser.wait_for(ROWS)
            assert seen["node"] and seen["node"] in seen["ring"], seen
            assert sorted(m[1] for m in seen["members"]) == addresses, seen["members"]
            assert all(m[2] == "ACTIVE" and m[3] in ("ALIVE", "-") for m in seen["members"]), seen["members"]
            assert len(seen["ring"]) == 3
            assert f"at {proc.address}" in seen["meta"]
            [users] = [p for p in seen["partitions"] if p[0] == "users"]
            _, role, leader, term, commit, applied, voters, _learners, _lag = users
            assert role in ("leader", "follower") and leader in seen["ring"], users
            assert int(term) >= 1 and int(commit) >= 1 and int(applied) >= 1
            assert sorted(voters.split(", ")) == sorted(seen["ring"])
        # The last node's page, as a person sees it.
        shot = browser.screenshot()
        # The page refreshes itself: a partition created now appears without a reload.
        trio.run(put_one, [p.address for p, _ in nodes], "late")
        browser.wait_for(LATE)
    width, height = png_size(shot)
    assert width == 1100 and height >= 500  # the viewport: the window less whatever the browser keeps for itself
    (tmp_path / "status.png").write_bytes(shot)
    if os.environ.get("BOROUGH_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot)


def test_the_screenshot_in_the_docs_is_a_page_screenshot_the_guide_shows() -> None:
    width, height = png_size(SCREENSHOT.read_bytes())
    assert width == 1100 and height >= 500
    assert "img/status.png" in (ROOT / "docs" / "operations.md").read_text()
