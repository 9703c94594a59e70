"""Fixtures for the website tests in tests/site/.

``test_api_pages.py``, ``test_site_assets.py`` and ``test_sphinx_ext.py`` are ordinary fast,
offline tests and always run.

``test_browser.py`` opens every page of the built website in a headless Chromium and is not
collected by a plain ``pytest`` run: it needs a built site and a browser. Run it after
``bash tools/build_book.sh`` with::

    MTLBOOK_SITE_TEST=1 python -m pytest tests/site/test_browser.py -q

Settings (environment variables):

* ``MTLBOOK_SITE_TEST=1``: collect and run the browser test (``.ci/run`` sets it);
* ``MTLBOOK_SITE_DIR``: the built site (default: ``_build/html`` at the repository root);
* ``MTLBOOK_CHROMIUM``: the Chromium binary (default: ``/usr/bin/chromium``, Debian's
  ``chromium`` package). The test drives it with Playwright (the ``site-test`` extra) and
  never downloads a browser of its own.

The site is served by Python's ``http.server`` on 127.0.0.1 (a free port) in a thread; every
request to any other host is blocked by the test, recorded, and reported as a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE_TEST = os.environ.get("MTLBOOK_SITE_TEST", "") not in ("", "0")

if not SITE_TEST:
    collect_ignore = ["test_browser.py"]


def site_dir() -> Path:
    """The built website that the browser test reads."""
    return Path(os.environ.get("MTLBOOK_SITE_DIR", REPO / "_build" / "html")).resolve()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass  # no line per request in the test output


@pytest.fixture(scope="session")
def site_root() -> Path:
    root = site_dir()
    if not (root / "index.html").is_file():
        pytest.fail(
            f"MTLBOOK_SITE_TEST is set but {root}/index.html does not exist; build the site "
            "first (bash tools/build_book.sh) or set MTLBOOK_SITE_DIR"
        )
    return root


@pytest.fixture(scope="session")
def site_url(site_root: Path) -> Iterator[str]:
    """Base URL (ending in /) of the site served on the loopback interface."""
    handler = functools.partial(_QuietHandler, directory=str(site_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by Playwright (the system's Chromium, never a download)."""
    try:
        from playwright import sync_api as playwright_api
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install -e '.[site-test]'")
    executable = os.environ.get("MTLBOOK_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).is_file():
        pytest.fail(
            f"no Chromium at {executable} (apt-get install chromium, or set MTLBOOK_CHROMIUM)"
        )
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
