"""The built website in a real browser: every page, offline, with math, images and search.

Collected only with ``MTLBOOK_SITE_TEST=1`` (see conftest.py); ``.ci/run`` runs it after the
book build. Each page of ``_build/html`` is opened in a headless Chromium from a server on
127.0.0.1, with every request to another host blocked, and must:

* raise no JavaScript error (uncaught exceptions and ``console.error`` messages);
* load every file it asks the site for (no 4xx/5xx, no failed request) and ask nothing of
  any other host (no CDN: the site is self-contained);
* decode every ``<img>`` (``naturalWidth > 0``);
* on pages with math, have MathJax typeset every formula, without errors and without raw
  ``$$`` left in the text.

Besides, the search page finds Chinese and English words, and every chapter page has a Colab
button that opens that chapter's notebook in the repository and a working notebook download.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLAB_PREFIX = "https://colab.research.google.com/github/mtlbook/mtlbook/blob/main/"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
TIMEOUT_MS = 30_000


def site_dir() -> Path:
    """The built website (as in conftest.py): MTLBOOK_SITE_DIR or _build/html."""
    return Path(os.environ.get("MTLBOOK_SITE_DIR", REPO / "_build" / "html")).resolve()


def _pages() -> list[str]:
    """Every HTML page of the site (relative paths), without theme templates and sources."""
    root = site_dir()
    if not root.is_dir():
        return []
    skip = ("_static/", "_sources/", "_images/")
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if not p.relative_to(root).as_posix().startswith(skip)
    )


def _toc_notebooks() -> list[str]:
    """The notebooks in _toc.yml (chapters/<name>, without suffix): the pages with buttons."""
    files: list[str] = []

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters", []) + entry.get("sections", []))

    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    walk(toc.get("parts", []) + toc.get("chapters", []))
    return sorted(
        f.removeprefix("chapters/")
        for f in files
        if f.startswith("chapters/") and (REPO / f"{f}.ipynb").is_file()
    )


PAGES = _pages()
CHAPTERS = _toc_notebooks()


class PageWatch:
    """Everything a page did that a reader should never see: errors, failed or foreign
    requests."""

    def __init__(self, page, base_url: str) -> None:
        self.base = urlsplit(base_url)
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.blocked: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)
        page.route("**/*", self._route)

    def _local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.hostname in LOOPBACK_HOSTS and parts.port == self.base.port

    def _route(self, route) -> None:
        url = route.request.url
        if self._local(url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text} ({message.location})")

    def _request_failed(self, request) -> None:
        if self._local(request.url):
            self.failed.append(f"{request.url}: {request.failure}")

    def _response(self, response) -> None:
        if self._local(response.url) and response.status >= 400:
            self.failed.append(f"{response.url}: HTTP {response.status}")

    def problems(self) -> list[str]:
        # A blocked foreign request also shows up as a failed request and a console error
        # ("net::ERR_FAILED"); report it once, as what it is.
        blocked = [f"request to another host: {url}" for url in self.blocked]
        errors = [e for e in self.errors if "net::ERR_FAILED" not in e or not self.blocked]
        return blocked + self.failed + errors


@pytest.fixture(scope="module")
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def open_page(context, site_url):
    """Open a page of the site; returns (page, watch) with the page fully loaded."""
    opened = []

    def _open(path: str):
        page = context.new_page()
        opened.append(page)
        watch = PageWatch(page, site_url)
        page.goto(site_url + path, wait_until="load")
        page.wait_for_load_state("networkidle")
        return page, watch

    yield _open
    for page in opened:
        page.close()


# Waits for every image (lazy ones included) and returns those that did not decode.
BROKEN_IMAGES_JS = """
async () => {
  const images = Array.from(document.images);
  for (const img of images) { img.loading = "eager"; }
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => !(img.complete && img.naturalWidth > 0))
               .map(img => img.currentSrc || img.src || img.outerHTML.slice(0, 120));
}
"""

# Waits for MathJax (if the page loads it) and reports what it did.
MATH_JS = """
async () => {
  const formulas = document.querySelectorAll(".math").length;
  let typeset = 0, errors = 0, loaded = false;
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    loaded = true;
    await window.MathJax.startup.promise;
    typeset = document.querySelectorAll("mjx-container").length;
    errors = document.querySelectorAll("mjx-merror").length;
  }
  const main = document.querySelector("main") || document.body;
  const text = Array.from(main.querySelectorAll("p, li, td, th, dd, dt, h1, h2, h3, h4"))
    .filter(el => !el.closest("pre, code, script, style"))
    .map(el => el.innerText).join("\\n");
  return {formulas, typeset, errors, loaded, rawDollars: text.includes("$$")};
}
"""


@pytest.mark.parametrize("path", PAGES)
def test_page(open_page, path: str) -> None:
    page, watch = open_page(path)

    broken = page.evaluate(BROKEN_IMAGES_JS)
    assert broken == [], f"{path}: images that did not decode: {broken}"

    math = page.evaluate(MATH_JS)
    if math["formulas"]:
        assert math["loaded"], f"{path}: has {math['formulas']} formulas but no MathJax"
        assert math["typeset"] >= math["formulas"], (
            f"{path}: MathJax typeset {math['typeset']} of {math['formulas']} formulas"
        )
        assert math["errors"] == 0, f"{path}: {math['errors']} MathJax errors"
    assert not math["rawDollars"], f"{path}: raw $$ left in the text"

    page.wait_for_load_state("networkidle")
    assert watch.problems() == [], f"{path}:\n" + "\n".join(watch.problems())


def test_every_chapter_is_a_page() -> None:
    assert PAGES, f"no HTML pages under {site_dir()}"
    missing = [c for c in CHAPTERS if f"chapters/{c}.html" not in PAGES]
    assert missing == [], f"chapters without a page: {missing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_buttons(open_page, site_url: str, chapter: str) -> None:
    """The Colab button opens this notebook in the repository; the download button works."""
    page, watch = open_page(f"chapters/{chapter}.html")

    colab = page.eval_on_selector_all(
        'a[href^="https://colab.research.google.com/"]', "els => els.map(e => e.href)"
    )
    expected = f"{COLAB_PREFIX}chapters/{chapter}.ipynb"
    assert expected in colab, f"Colab links {colab}, expected {expected}"

    downloads = page.eval_on_selector_all(
        "a[href]", "els => els.map(e => e.href).filter(h => h.endsWith('.ipynb'))"
    )
    local = [h for h in downloads if h.startswith(site_url)]
    assert any(
        unquote(urlsplit(h).path).endswith(f"/_sources/chapters/{chapter}.ipynb") for h in local
    ), f"no notebook download link among {downloads}"
    response = page.request.get(local[0])
    assert response.ok, f"{local[0]}: HTTP {response.status}"
    notebook = json.loads(response.body())
    assert notebook.get("nbformat") == 4 and notebook.get("cells")

    # Interactive controls are replaced by a note with the same Colab link.
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    notes = page.locator(".mtl-widget-note").count()
    assert notes == views, f"{views} widget outputs but {notes} notes"
    if notes:
        assert page.locator(f'.mtl-widget-note a[href="{expected}"]').count() == notes
    assert watch.problems() == []


@pytest.mark.parametrize("query", ["多任务", "负迁移", "什么是负迁移", "MMoE", "gradient"])
def test_search(open_page, query: str) -> None:
    """Sphinx's search (with jieba's segmentation for Chinese) returns pages; a Chinese
    phrase is cut into index words in the browser (_static/search-zh.js)."""
    page, watch = open_page(f"search.html?q={query}")
    page.wait_for_function(
        "() => document.querySelector('#search-results') &&"
        " /\\S/.test(document.querySelector('#search-results .search-summary')?.textContent"
        " || '')",
        timeout=TIMEOUT_MS,
    )
    hits = page.eval_on_selector_all(
        "#search-results ul.search li a", "els => els.map(e => e.getAttribute('href'))"
    )
    assert hits, f"search for {query!r} found nothing"
    assert watch.problems() == []


def test_search_index_has_chinese_words() -> None:
    """The index holds Chinese words (jieba), not just Latin ones."""
    text = (site_dir() / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(re.match(r"Search\.setIndex\((.*)\)\s*$", text, re.S).group(1))
    terms = index["terms"]
    for word in ("多任务", "负迁移", "mmoe"):
        assert word in terms, f"{word!r} is not in the search index"


def test_figures_stay_light_in_dark_mode(open_page) -> None:
    """In the dark theme, figures keep a white background and are not dimmed."""
    page, _ = open_page("chapters/12_1_why_mtl.html")
    page.evaluate("() => document.documentElement.setAttribute('data-theme', 'dark')")
    style = page.eval_on_selector(
        "div.cell_output img",
        "img => { const s = getComputedStyle(img);"
        " return {background: s.backgroundColor, filter: s.filter}; }",
    )
    assert style == {"background": "rgb(255, 255, 255)", "filter": "none"}


def test_site_is_self_contained() -> None:
    """No page refers to a script, style sheet, image or font on another host."""
    root = site_dir()
    pattern = re.compile(
        r"<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc=[\"'](https?:)?//"
        r"|<link\b[^>]*\bhref=[\"'](https?:)?//[^\"']*[\"'][^>]*>",
        re.I,
    )
    offenders = {}
    for rel in PAGES:
        html = (root / rel).read_text(encoding="utf-8", errors="replace")
        for match in pattern.finditer(html):
            tag = html[match.start() : html.find(">", match.start()) + 1]
            if tag.lower().startswith("<link") and not re.search(
                r"rel=[\"'](?:stylesheet|preload|modulepreload|icon|shortcut icon)", tag
            ):
                continue  # canonical/alternate links are not loaded
            offenders.setdefault(rel, []).append(tag[:160])
    assert offenders == {}, offenders
    assert (root / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
