"""One word per concept: the glossary's 用词约定 table lists, for each concept, the book's word
and the variants not to use; no page of the book may use a variant (an occurrence inside the
book's own word does not count: 探针 inside 线性探针)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "glossary.md"


def conventions() -> list[tuple[str, list[str]]]:
    """(word to use, [variants not to use]) for each row of the 用词约定 table."""
    text = GLOSSARY.read_text(encoding="utf-8")
    section = text.split("## 用词约定", 1)
    assert len(section) == 2, "glossary.md has no '## 用词约定' section"
    rows = []
    for line in section[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("用", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], [v.strip() for v in cells[1].split("、") if v.strip()]))
    assert rows, "the 用词约定 table is empty"
    return rows


def pages() -> dict[str, str]:
    """Every page's text: markdown and code cells of the chapters, the book's .md pages."""
    out = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        out[path.name] = "\n".join("".join(c["source"]) for c in cells)
    for path in [ROOT / "index.md", ROOT / "how_to_use.md", ROOT / "README.md"]:
        out[path.name] = path.read_text(encoding="utf-8")
    return out


def variant_uses(text: str, word: str, variant: str) -> list[str]:
    """The occurrences of ``variant`` in ``text`` that are not part of an occurrence of
    ``word``, each with some context."""
    allowed = [range(m.start(), m.end()) for m in re.finditer(re.escape(word), text)]
    found = []
    for m in re.finditer(re.escape(variant), text):
        if not any(m.start() in r and m.end() - 1 in r for r in allowed):
            found.append(text[max(0, m.start() - 15) : m.end() + 15].replace("\n", " "))
    return found


@pytest.mark.parametrize("word, variants", conventions(), ids=lambda v: str(v))
def test_no_page_uses_a_variant_the_glossary_rules_out(word: str, variants: list[str]) -> None:
    offenders = {
        f"{name}: …{context}…": variant
        for name, text in pages().items()
        for variant in variants
        for context in variant_uses(text, word, variant)
    }
    assert not offenders, f"use {word!r}, not the variants: " + "; ".join(offenders)


def test_variant_uses_allows_the_variant_inside_the_word() -> None:
    assert variant_uses("拟合一个线性探针", "线性探针", "探针") == []
    assert variant_uses("在固定探针上", "线性探针", "探针") == ["在固定探针上"]


def test_population_is_defined_where_first_used() -> None:
    """种群 (population) is first used in 12.2, with its English term next to it."""
    order = [
        "12_1_why_mtl.ipynb",
        "12_2_how_sharing_helps.ipynb",
    ]
    texts = pages()
    assert "种群" not in texts[order[0]], "12.1 uses 种群 before 12.2 defines it"
    first = texts[order[1]].index("种群")
    assert "population" in texts[order[1]][first : first + 40], (
        "12.2 should give the English term (population) where 种群 first appears"
    )
