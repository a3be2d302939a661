"""The /status page in a real headless browser (Debian's chromium, driven over the DevTools
protocol): it renders the running adapter's listener and spool, shows a failure provoked after
the page was opened (the store refuses the upload with HTTP 400) without a reload, and keeps
refreshing. No patient data appears on it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.peers.adapter_proc import AdapterProcess
from tests.peers.datasets import make_ct_series
from tests.peers.dcmtk import count_store_successes, dcmsend
from tests.peers.http_stub import HttpStub, StubResponse
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.wait import stop_process, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PATIENT_NAME = "STATUS^PAGE^PATIENT"


class Browser:
    """One headless chromium with one page, driven over its DevTools websocket."""

    def __init__(self, workdir: Path) -> None:
        if not Path(CHROMIUM).exists():
            pytest.fail("chromium missing: apt-get install -y chromium (.ci/run installs it)")
        self.port = free_port()
        self.profile = tempfile.mkdtemp(dir=workdir, prefix="chromium-")
        self.log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={self.port}",
                "--remote-debugging-address=127.0.0.1",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._ids = count(1)
        pages = wait_until(self._pages, timeout=30, interval=0.1, what="chromium DevTools")
        import websocket

        self.ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )

    def _pages(self) -> list[dict[str, Any]] | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"chromium exited {self.proc.returncode}")
        try:
            found = requests.get(f"http://{LOOPBACK}:{self.port}/json/list", timeout=1).json()
        except requests.RequestException:
            return None
        pages = [p for p in found if p.get("type") == "page"]
        return pages or None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page and return its JSON value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_process(self.proc, timeout=10)
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def store() -> Iterator[HttpStub]:
    """A DICOMweb store that refuses every STOW-RS with 400 (a permanent failure)."""
    with HttpStub() as stub:
        stub.default = StubResponse(400, {"Content-Type": "text/plain"}, b"bad dataset")
        yield stub


def test_status_page_renders_shows_a_provoked_failure_and_refreshes(
    browser: Browser, store: HttpStub, tmp_path: Path
) -> None:
    config = {
        "site": "browser-test",
        "dicomweb": {"url": f"{store.url}/dicom-web", "auth": {"kind": "none"}},
        "retry": {"max_attempts": 1},
        "importer": {"dimse": {"ae_title": "IMPORTADAPTER"}},
    }
    with AdapterProcess(config, tmp_path) as adapter:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{adapter.health_url}/status?interval=0.5")
        wait_until(
            lambda: (browser.js("Number(document.getElementById('polls').textContent)") or 0) >= 1,
            timeout=20,
            what="the page's first poll",
        )
        listeners = browser.js("document.getElementById('listeners').innerText")
        assert "IMPORTADAPTER" in listeners and f"127.0.0.1:{adapter.port}" in listeners
        assert "0 instance(s)" in browser.js("document.getElementById('spool').innerText")
        assert browser.js("document.getElementById('failures').tBodies[0].innerText") == "none"
        polls_before = browser.js("Number(document.getElementById('polls').textContent)")

        files = make_ct_series(tmp_path / "ct", 1, rows=16, cols=16, patient_name=PATIENT_NAME)
        result = dcmsend(adapter.port, files, aet="MODALITY", called_aet="IMPORTADAPTER")
        assert count_store_successes(result) == 1, result.output  # after-spool: accepted

        def failure_shown() -> bool:
            rows = browser.js(
                "[...document.querySelectorAll('#failures tbody tr')]"
                ".map(r => r.dataset.httpStatus)"
            )
            return "400" in (rows or [])

        wait_until(failure_shown, timeout=30, what="the HTTP 400 failure on the page")
        failures = browser.js("document.getElementById('failures').innerText")
        assert "400" in failures and "importer" in failures
        letters = browser.js("document.getElementById('dead-letters').innerText")
        assert "importer" in letters and "\t1\t" in letters
        polls_after = browser.js("Number(document.getElementById('polls').textContent)")
        assert polls_after > polls_before  # refreshed itself: no reload happened
        assert browser.js("performance.getEntriesByType('navigation').length") == 1
        page_text = browser.js("document.body.innerText")
        assert PATIENT_NAME not in page_text and "STATUS^PAGE" not in page_text
        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "status.png").write_bytes(__import__("base64").b64decode(shot["data"]))


def test_status_json_and_page_are_served_next_to_the_probes(tmp_path: Path) -> None:
    config = {
        "dicomweb": {"url": "http://127.0.0.1:9/dicom-web", "auth": {"kind": "none"}},
        "importer": {},
    }
    with AdapterProcess(config, tmp_path) as adapter:
        page = requests.get(f"{adapter.health_url}/status", timeout=5)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "status.json" in page.text
        snapshot = requests.get(f"{adapter.health_url}/status.json", timeout=5).json()
        assert snapshot["services"]["dimse"]["kind"] == "listener"
        assert snapshot["services"]["route"]["spool_depth"] == 0
        assert snapshot["dead_letters"]["importer"]["count"] == 0
