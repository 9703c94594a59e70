"""The package's two floors: the library never imports the book's experiment code.

``mtlbook/book/`` holds the chapters' experiment drivers; they import the library (data,
models, weighting, training, analysis, ...), never the other way round. The check reads every
module's import statements, so it also catches imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mtlbook

PACKAGE = Path(mtlbook.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    module = ".".join(("mtlbook", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def test_nothing_outside_the_book_imports_the_book():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "book"):
            continue
        found = sorted(
            n
            for n in _imported_modules(path)
            if n == "mtlbook.book" or n.startswith("mtlbook.book.")
        )
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}, f"library modules import the book: {offenders}"


def test_the_check_sees_relative_and_absolute_imports(tmp_path):
    book = PACKAGE / "book" / "ch12_1.py"
    assert "mtlbook.analysis.runs" in _imported_modules(book)  # `from ..analysis.runs import`
    assert "mtlbook.book" not in _imported_modules(PACKAGE / "analysis" / "compare.py")


def test_the_top_level_stays_small():
    functions = [n for n in mtlbook.__all__ if not isinstance(getattr(mtlbook, n), type(mtlbook))]
    assert len(functions) <= 12, functions
    for name in mtlbook.__all__:
        assert hasattr(mtlbook, name), name
