"""The API reference covers every public module, and every page of it is in the book.

Fast and offline: reads api.md, api/*.md and _toc.yml and imports the package; it does not
build the site (``bash tools/build_book.sh`` does, with autodoc, and fails on any warning).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import yaml

import mtlbook

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "api"
AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\s*$", re.M)


def public_modules() -> set[str]:
    """The modules that need a page: every top-level module and subpackage, and every module of
    the subpackages whose modules are imported by their own path (``mtlbook.training.loop``,
    ``mtlbook.analysis.seesaw``, ``mtlbook.book.ch12_5``), except private ones (``_``). The
    other subpackages (models, weighting, data, datasets) export their API from the package and
    are documented by its page."""
    by_path = ("mtlbook.training.", "mtlbook.analysis.", "mtlbook.book.")
    names = {
        info.name
        for info in pkgutil.walk_packages(mtlbook.__path__, "mtlbook.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    return {name for name in names if name.count(".") == 1 or name.startswith(by_path)}


def documented_modules() -> dict[str, str]:
    """Module documented by each page in api/ (page stem → module)."""
    pages = {}
    for page in sorted(API_DIR.glob("*.md")):
        found = AUTOMODULE.findall(page.read_text(encoding="utf-8"))
        assert len(found) == 1, f"{page.name}: expected one automodule directive, got {found}"
        pages[page.stem] = found[0]
    return pages


def api_toc_entries() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    for part in toc["parts"]:
        for chapter in part.get("chapters", []):
            if chapter.get("file") == "api":
                return [section["file"] for section in chapter.get("sections", [])]
    raise AssertionError("_toc.yml has no `file: api` entry")


def test_every_public_module_has_a_page() -> None:
    documented = set(documented_modules().values())
    missing = sorted(public_modules() - documented)
    assert missing == [], f"public modules without a page in api/: {missing}"


def test_every_page_documents_an_importable_module() -> None:
    for page, module in documented_modules().items():
        assert module.startswith("mtlbook."), f"api/{page}.md documents {module}"
        importlib.import_module(module)


def test_every_page_is_in_the_toc_once() -> None:
    entries = api_toc_entries()
    assert len(entries) == len(set(entries)), f"duplicate entries under api: {entries}"
    pages = sorted(f"api/{stem}" for stem in documented_modules())
    assert sorted(entries) == pages


def test_the_overview_lists_every_page() -> None:
    overview = (REPO / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (mtlbook\.[\w.]+)\s*$", overview, re.M))
    unlisted = sorted(set(documented_modules().values()) - listed)
    assert unlisted == [], f"modules missing from the tables of api.md: {unlisted}"
