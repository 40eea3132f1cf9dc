"""Headless Chromium driven over the DevTools protocol: open a page, run JavaScript, pick a file, watch requests.

Just enough for the page tests (Debian's chromium and the websockets client, no Selenium or
Playwright). Waits poll the page with :func:`serving.waiting.wait_for`, never sleep.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from serving.waiting import NotYet, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Page:
    """One browser tab: commands answered in order, events kept for :meth:`requests`."""

    def __init__(self, socket: Connection) -> None:
        self.socket = socket
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Network", "DOM"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_until("document.readyState === 'complete' && location.href !== 'about:blank'", what=f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, *, what: str, timeout_s: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; returns its value (true for an element)."""
        as_value = f"(() => {{ const found = ({expression}); return found instanceof Node ? true : found; }})()"

        def truthy() -> Any:
            value = self.evaluate(as_value)
            if not value:
                raise NotYet(f"{expression} is {value!r}")
            return value

        return wait_for(truthy, timeout_s=timeout_s, what=what)

    def set_file(self, selector: str, path: Path) -> None:
        """Choose ``path`` in the file input ``selector``, as a user would in the file picker."""
        node = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.send("DOM.setFileInputFiles", files=[str(path)], objectId=node["result"]["objectId"])

    def requests(self) -> list[tuple[str, str]]:
        """(method, URL) of every request the page sent so far."""
        self.evaluate("0")  # takes in the events that arrived meanwhile
        return [
            (event["params"]["request"]["method"], event["params"]["request"]["url"])
            for event in self.events
            if event.get("method") == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: Path, *, width: int = 1100) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A fresh headless Chromium (its own profile) and one tab in it."""
    profile = tempfile.mkdtemp(prefix="onebox-chromium-")
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # tests run as root in a container
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:

        def devtools_port() -> str:
            # Chromium writes the port it listens on into the profile once it is up.
            active = Path(profile, "DevToolsActivePort")
            if browser.poll() is not None:
                raise RuntimeError(f"chromium exited with {browser.returncode}")
            if not active.is_file() or not active.read_text().strip():
                raise NotYet("no DevToolsActivePort yet")
            return active.read_text().split()[0]

        port = wait_for(devtools_port, timeout_s=60, what="chromium to start")
        tabs = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page_url = next(tab["webSocketDebuggerUrl"] for tab in tabs if tab["type"] == "page")
        with connect(page_url, max_size=None) as socket:
            yield Page(socket)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
