"""Sphinx extension for the website: a self-contained page load, and Chinese search terms.

**Self-contained.** Each chapter notebook opens with an "Open in Colab" badge, an image
that lives on Colab's servers: fine on GitHub and in Jupyter, but on the website every
reader's browser would fetch it from another host when the page loads. This extension swaps
such remote badge images for ``_static/open-in-colab.svg``, which the site serves itself;
the link around the badge (the chapter in Colab) is kept. Sphinx then copies the local
image like any other. Other remote images are left alone here: the browser test
(tests/site/test_browser.py) fails on any request to another host, so a new one is noticed.

**Search terms.** With ``html_search_language = "zh"`` Sphinx segments Chinese text with
jieba. Jieba's general dictionary does not know the book's terms and cuts "负迁移" (negative
transfer) into "负" + "迁移", so a search for the term would find nothing. Before any page is
indexed, every Chinese term of the glossary (the first column of the tables in
``glossary.md``) is added to jieba's dictionary, so the index holds the terms whole (and,
through jieba's search mode, their parts as well).

**Inline scripts once.** Sphinx 7.4 adds an inline ``<script>`` that an extension registers
after the builder started (``app.add_js_file(None, body=...)``: sphinx-thebe's
``const THEBE_JS_URL = ...``, sphinx-togglebutton's settings) twice to every page, the second
time under the file name ``""`` instead of ``None``. The second ``const`` declaration is a
JavaScript error on every page. Each page's script list is de-duplicated before rendering.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

# Remote image → local replacement, relative to the source folder (a leading "/" means
# "from the source folder" in Sphinx image paths).
LOCAL_IMAGES = {
    "https://colab.research.google.com/assets/colab-badge.svg": "/_static/open-in-colab.svg",
}


def localise_images(app: Sphinx, doctree: nodes.document) -> None:
    for image in doctree.findall(nodes.image):
        local = LOCAL_IMAGES.get(image.get("uri", ""))
        if local is not None:
            image["uri"] = local


HAN = re.compile(r"[\u3400-\u9fff]")
GLOSSARY = "glossary.md"


def glossary_terms(path: Path) -> list[str]:
    """The Chinese terms in the first column of the glossary's tables.

    A cell may hold variants: "购买（转化）" gives "购买" and "转化"; "训练集 / 验证集" gives both.
    """
    terms: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cell = line.split("|")[1].strip()
        for part in re.split(r"[（）()/、，,]", cell):
            part = part.strip()
            if HAN.search(part) and not re.search(r"\s", part) and part not in terms:
                terms.append(part)
    return [t for t in terms if t != "中文"]  # the column header


def add_search_terms(app: Sphinx) -> None:
    if not str(app.config.html_search_language or "").startswith("zh"):
        return
    try:
        import jieba
    except ImportError:
        return  # Sphinx then indexes no Chinese at all; the browser test notices
    glossary = Path(app.srcdir) / GLOSSARY
    if glossary.is_file():
        for term in glossary_terms(glossary):
            jieba.add_word(term)


def _script_key(script: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    attributes = getattr(script, "attributes", {}) or {}
    return (
        str(getattr(script, "filename", script) or ""),
        tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
    )


def dedupe_scripts(
    app: Sphinx,
    pagename: str,
    templatename: str,
    context: dict[str, Any],
    doctree: nodes.document | None,
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", add_search_terms)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    # Before Sphinx's image collector (priority 500) records the images of the page.
    app.connect("doctree-read", localise_images, priority=100)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
