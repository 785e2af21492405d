"""A minimal W3C WebDriver client (standard library only) for Debian's headless Chromium and its chromedriver.

Just what the status-page test needs: start chromedriver, open a session on a headless Chromium, go to a URL,
run a script, take a screenshot, quit. No Selenium, so the test extra stays small and nothing is downloaded at
run time: the browser and the driver are Debian's packages (``apt-get install chromium chromium-driver``, which
``.ci/run`` does).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["Browser", "find_browser", "INSTALL_HINT"]

INSTALL_HINT = (
    "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run installs "
    "them), or BOROUGH_CHROMIUM and BOROUGH_CHROMEDRIVER naming the binaries (issue 17)"
)

# The flags the machine's notes give for a closed network: without the background-networking ones Chromium
# keeps dialling Google's hosts and logging refusals.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = os.environ.get("BOROUGH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("BOROUGH_CHROMEDRIVER") or shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process and one headless Chromium session; a context manager that always cleans up."""

    def __init__(self, chromium: str, driver: str, profile_dir: Path, *, width: int = 1100, height: int = 800):
        self._chromium, self._driver_path = chromium, driver
        self._profile = profile_dir
        self._size = (width, height)
        self._port = _free_port()
        self._base = f"http://127.0.0.1:{self._port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: str | None = None

    def __enter__(self) -> Browser:
        self._proc = subprocess.Popen(
            [self._driver_path, f"--port={self._port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_for_driver()
            args = [*CHROMIUM_ARGS, f"--user-data-dir={self._profile}", "--window-size={},{}".format(*self._size)]
            caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": self._chromium, "args": args}}
            answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self._session = answer["sessionId"]
        except BaseException:
            self._stop_driver()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._session is not None:
                self._call("DELETE", f"/session/{self._session}")
        finally:
            self._stop_driver()

    def get(self, url: str) -> None:
        self._call("POST", self._path("/url"), {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` (a function body; ``arguments`` holds ``args``) in the page and return its value."""
        return self._call("POST", self._path("/execute/sync"), {"script": source, "args": list(args)})

    def wait_for(self, source: str, timeout: float = 20.0) -> Any:
        """Run ``source`` until it returns something truthy; that value. Polls every 0.1 s up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.script(source)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"page condition not met within {timeout} s: {source}")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self._call("GET", self._path("/screenshot")))

    def _path(self, suffix: str) -> str:
        assert self._session is not None
        return f"/session/{self._session}{suffix}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc

    def _wait_for_driver(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"chromedriver exited with {self._proc.returncode}")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromedriver did not answer within 20 s")
            time.sleep(0.1)

    def _stop_driver(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
