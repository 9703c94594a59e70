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


def public_top_level_modules() -> set[str]:
    """``mtlbook.<name>`` for every module and subpackage whose name has no leading ``_``."""
    return {
        f"mtlbook.{info.name}"
        for info in pkgutil.iter_modules(mtlbook.__path__)
        if not info.name.startswith("_")
    }


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
    missing = sorted(public_top_level_modules() - documented)
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
